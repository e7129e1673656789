"""The check families; importing this package registers every check."""

from edge.diag.checks import (  # noqa: F401
    cameras,
    restarts,
    services,
    storage,
    system,
    tls,
    transmission,
    zones,
)
