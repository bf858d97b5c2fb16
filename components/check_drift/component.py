"""Check drift: the served model's latest requests against its reference traffic profile."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Metrics, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def check_drift(
    champion: str,
    request_log: str,
    window: int,
    tracking_uri: str,
    report: Output[HTML],
    scores: Output[Metrics],
) -> NamedTuple("DriftOutputs", [("drift", bool), ("requests", int), ("reason", str)]):
    """Compare the latest ``window`` logged requests with the champion's reference profile.

    Library: :func:`llarapp.pipeline.stages.drift_check` (around
    :func:`llarapp.monitoring.write_report`, as ``llarapp monitor check``). ``champion``: a
    model folder, ``s3://`` or ``models:/llarapp@champion`` (resolved in this component against
    ``tracking_uri``). With fewer than ``window`` requests logged nothing is checked: no drift,
    and the report and ``reason`` say so. Not cached: the log grows between runs.

    Files in: ``request_log`` (the SQLite event store ``llarapp serve --events`` writes: its
    ``requests`` table), the champion's ``arrays.npz`` (catalogue) and ``reference/``
    (``window.parquet``, ``vectors.npz``).

    Files out: ``report`` (HTML: the Evidently Report); ``scores`` (Metrics: ``drift``,
    ``checked``, ``window``, ``requests_logged``, ``score_<column>`` and ``drifted_<column>`` per
    column; also as JSON at its path). Outputs ``drift`` (the pipeline's decision),
    ``requests`` (the window checked, 0 when not checked) and ``reason``.
    """
    import json
    import shutil
    import tempfile
    from collections import namedtuple
    from pathlib import Path

    from llarapp.monitoring.report import HTML_FILE
    from llarapp.pipeline.stages import drift_check, drift_metrics
    from llarapp.pipeline.status import run_stage

    with run_stage("check_drift"), tempfile.TemporaryDirectory(prefix="llarapp-drift-") as tmp:
        result = drift_check(champion, request_log, tmp, window=window, tracking_uri=tracking_uri)
        shutil.copyfile(Path(tmp) / HTML_FILE, report.path)
        for name, value in drift_metrics(result).items():
            scores.log_metric(name, value)
        # a file at the path too: kfp.local's cache treats an output without one as missing
        Path(scores.path).write_text(json.dumps(scores.metadata, indent=2))
    print(result["reason"])
    outputs = namedtuple("DriftOutputs", ["drift", "requests", "reason"])
    return outputs(result["drift"], result["current_rows"], result["reason"])
