"""The check families; importing this package registers every check."""

from edge.diag.checks import services, system  # noqa: F401
