"""Site box firmware: alarm loops, event journal, transmission and video."""

__version__ = "0.1.0"
