"""Monitoring: is the traffic a served model gets still the traffic it was trained for?

- :mod:`~llarapp.monitoring.window`: per-request features of a window of requests (seed
  counts, unknown-seed share, seed popularity, title-only share, title texts and vectors), from
  request bodies or the serving request log; a reference profile is a saved window.
- :mod:`~llarapp.monitoring.drift`: the decision per column and overall (measured methods).
- :mod:`~llarapp.monitoring.report`: the Evidently 0.7 Report (HTML + JSON) for people.

Never imports kfp or kserve: the KFP component and the servers stand on it.
"""

from llarapp.monitoring.drift import (
    DEFAULT_WINDOW,
    ColumnDrift,
    DriftConfig,
    DriftResult,
    Reference,
    check_drift,
    embedding_drift,
)
from llarapp.monitoring.report import write_report
from llarapp.monitoring.window import (
    REFERENCE_DIR,
    Catalogue,
    Window,
    window_from_bodies,
    window_from_log,
    write_reference,
)

__all__ = [
    "DEFAULT_WINDOW",
    "REFERENCE_DIR",
    "Catalogue",
    "ColumnDrift",
    "DriftConfig",
    "DriftResult",
    "Reference",
    "Window",
    "check_drift",
    "embedding_drift",
    "window_from_bodies",
    "window_from_log",
    "write_reference",
    "write_report",
]
