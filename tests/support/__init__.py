"""Test helpers shared by tests and benches: real peers (mosquitto, the alarm service)."""
