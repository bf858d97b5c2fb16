"""The drift check for people: an Evidently 0.7 ``Report`` (HTML + JSON) beside the decision.

Files out (``out_dir``):

- ``drift_report.html``: the Evidently Report — ``ValueDrift`` per tabular column (and the
  titles' reference cluster, ``title_cluster``) with the decision's method and threshold,
  ``ValueDrift`` on the title text (Evidently's text drift), and ``EmbeddingsDrift`` on the
  384-d title vectors with the decision's embedding method. ``DataDriftPreset`` is not used:
  it ignores its embedding arguments (evidently 0.7.23).
- ``drift_report.json``: the same Report as Evidently's JSON (each metric's config and value).
- ``drift.json``: :meth:`llarapp.monitoring.drift.DriftResult.to_dict`, the decision itself.

The Report's ``EmbeddingsDrift`` draws a t-SNE plot (about a minute for a few thousand rows on
two cores); the decision never waits for it (:func:`llarapp.monitoring.drift.check_drift`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.metrics import ValueDrift
from evidently.metrics.embeddings import EmbeddingsDrift

from llarapp.monitoring.drift import (
    EMBEDDINGS,
    TITLE_CLUSTER,
    DriftConfig,
    DriftResult,
    Reference,
    check_drift,
)
from llarapp.monitoring.window import Window

HTML_FILE = "drift_report.html"
JSON_FILE = "drift_report.json"
DECISION_FILE = "drift.json"


def _dataset(window: Window, reference: Reference, definition: DataDefinition) -> Dataset:
    vectors = pd.DataFrame(
        window.vectors, columns=[f"v{i}" for i in range(window.vectors.shape[1])]
    )
    frame = window.frame.reset_index(drop=True)
    frame = pd.concat([frame, reference.clusters(window), vectors], axis=1)
    return Dataset.from_pandas(frame, data_definition=definition)


def write_report(
    reference: Window, current: Window, out_dir: Path | str, config: DriftConfig | None = None
) -> DriftResult:
    """Decide (:func:`check_drift`), then write the Report and the decision into ``out_dir``.

    Raises:
        ValueError: the windows' title vectors differ in dimension.
    """
    config = config or DriftConfig()
    ref = Reference.of(reference, config)
    result = check_drift(ref, current, config)
    vector_columns = [f"v{i}" for i in range(reference.vectors.shape[1])]
    definition = DataDefinition(
        numerical_columns=[c for c, t in config.columns.items() if not t.categorical]
        + vector_columns,
        categorical_columns=[c for c, t in config.columns.items() if t.categorical]
        + [TITLE_CLUSTER],
        text_columns=["title"],
        embeddings={EMBEDDINGS: vector_columns},
    )
    metrics = [
        ValueDrift(column=name, method=test.method, threshold=test.threshold)
        for name, test in config.columns.items()
    ]
    test = config.title_cluster
    metrics.append(ValueDrift(column=TITLE_CLUSTER, method=test.method, threshold=test.threshold))
    metrics.append(ValueDrift(column="title"))
    metrics.append(
        EmbeddingsDrift(embeddings_name=EMBEDDINGS, drift_method=config.embedding_method())
    )
    snapshot = Report(metrics).run(
        _dataset(current, ref, definition), _dataset(reference, ref, definition)
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out_dir / HTML_FILE))
    snapshot.save_json(str(out_dir / JSON_FILE))
    (out_dir / DECISION_FILE).write_text(json.dumps(result.to_dict(), indent=2))
    return result
