"""edge-video: capture, motion pre-analysis, pre/post-alarm ring buffer and clips, health.

Everything under this package may import numpy and av; edge-alarm never imports it.
"""
