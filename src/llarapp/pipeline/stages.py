"""Stage functions the pipeline components call where the library has no single function yet.

Data contracts (files in -> files out) are in each function's docstring and in the README's
stage table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import importlib
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

CANDIDATE = "llara++"  # the roster name of the model the pipeline trains
EVALUATION_FILE = "evaluation.json"
CACHE_SUBDIR = "cache"


# ----------------------------------------------------------------------------- parameters


def coerce_numbers(data: dict, template: dict) -> dict:
    """Undo the int -> float of KFP ``dict`` parameters (protobuf Struct numbers are doubles).

    A float value with an integral value becomes an ``int`` where ``template`` (the config's
    defaults as a dict) holds an ``int`` at the same key; nested dicts are handled alike.
    """
    out = {}
    for key, value in data.items():
        ref = template.get(key)
        if isinstance(value, dict) and isinstance(ref, dict):
            value = coerce_numbers(value, ref)
        elif (
            isinstance(value, float)
            and isinstance(ref, int)
            and not isinstance(ref, bool)
            and value.is_integer()
        ):
            value = int(value)
        out[key] = value
    return out


# ----------------------------------------------------------------------------- text features


def text_features(data_dir: Path | str, out_dir: Path | str) -> dict:
    """Embed every track text and playlist title; also write them as one embedding-cache shard.

    Files in: ``tracks.parquet``, ``playlists.parquet`` of an ingest folder.
    Files out (``out_dir``): ``tracks.npz`` (``track_uris`` str, ``vectors`` float32 (n, 384)),
    ``titles.npz`` (``pids`` int64, ``vectors`` float32 (n, 384)) -- see
    :func:`llarapp.features.text.embed_dataset` -- and ``cache/emb-features-<hash>.npz``, a shard
    in the :class:`~llarapp.text.TextEncoder` cache format (``keys`` U40, ``vectors``
    float32) holding the same vectors keyed by text. :func:`seed_text_cache` copies that shard
    into a stage's cache, so later stages (train, evaluate) embed nothing again, also in a fresh
    container.
    """
    from llarapp.data.dataset import track_texts
    from llarapp.data.schema import PLAYLISTS_FILE, TRACKS_FILE
    from llarapp.features.text import embed_dataset
    from llarapp.text import TextEncoder, default_cache_dir

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    encoder = TextEncoder(default_cache_dir())
    report = embed_dataset(data_dir, out_dir, encoder)
    tracks = pq.read_table(data_dir / TRACKS_FILE).to_pandas()
    names = pq.read_table(data_dir / PLAYLISTS_FILE, columns=["name"]).column("name").to_pylist()
    texts = track_texts(tracks) + [str(n) for n in names]
    with (
        np.load(out_dir / "tracks.npz", allow_pickle=False) as t,
        np.load(out_dir / "titles.npz", allow_pickle=False) as p,
    ):
        vectors = np.concatenate([t["vectors"], p["vectors"]]).astype(np.float32)
    keys = np.array([encoder.key(x) for x in texts], dtype="U40")
    _, first = np.unique(keys, return_index=True)
    keys, vectors = keys[np.sort(first)], vectors[np.sort(first)]
    digest = hashlib.sha1(keys.tobytes()).hexdigest()[:16]
    cache = out_dir / CACHE_SUBDIR
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(cache / f"emb-features-{digest}.npz", keys=keys, vectors=vectors)
    return {**report, "cache_vectors": len(keys)}


def seed_text_cache(text_dir: Path | str | None) -> int:
    """Copy the cache shards of a :func:`text_features` folder into the local embedding cache.

    Returns:
        How many shards were copied (a shard already there is not copied again).
    """
    from llarapp.text import default_cache_dir

    if not text_dir:
        return 0
    shards = sorted((Path(text_dir) / CACHE_SUBDIR).glob("emb-*.npz"))
    target = default_cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    copied = 0
    for shard in shards:
        if not (target / shard.name).exists():
            tmp = target / f"{shard.stem}.tmp.npz"  # not matched by the cache's emb-*.npz glob
            shutil.copyfile(shard, tmp)
            tmp.rename(target / shard.name)
            copied += 1
    log.info("text cache: %d of %d shard(s) copied into %s", copied, len(shards), target)
    return copied


# ----------------------------------------------------------------------------- behavior


def behavior_features(
    data_dir: Path | str,
    split_dir: Path | str,
    out_dir: Path | str,
    als_config: dict | None = None,
    tune_max_cases: int = 400,
) -> dict:
    """Fit implicit ALS on the training fold; tune it on validation cases unless configured.

    Files in: an ingest folder, a split folder. Files out (``out_dir``): ``als/`` (the fitted
    ALS), ``als_config.json``, ``tuning.json`` (:func:`llarapp.training.behavior.fit_behavior`).
    """
    from llarapp.config import ALSConfig, TuneConfig, from_json, to_json
    from llarapp.training.behavior import fit_behavior

    config = None
    if als_config:
        config = from_json(ALSConfig, coerce_numbers(als_config, to_json(ALSConfig())))
    return fit_behavior(
        data_dir, split_dir, out_dir, config=config, tune=TuneConfig(max_cases=tune_max_cases)
    )


# ----------------------------------------------------------------------------- models


def resolve_model(uri: str, tracking_uri: str | None = None):
    """A model URI -- a folder, ``s3://``, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` --
    as a local model folder (:func:`llarapp.serving.model_uri.resolve_model_uri`); ``models:/``
    URIs resolve against the registry at ``tracking_uri`` (``$MLFLOW_TRACKING_URI``, else SQLite
    under ``runs/``, when empty).

    Returns:
        A :class:`~llarapp.serving.model_uri.ResolvedModel` (``path``, ``uri``, ``version``).
    """
    from llarapp.serving.model_uri import resolve_model_uri
    from llarapp.training.llara import configure_mlflow

    if uri.startswith("models:/"):
        configure_mlflow(tracking_uri or None)
    return resolve_model_uri(uri)


# ----------------------------------------------------------------------------- training


def train_ranker(
    data_dir: Path | str,
    split_dir: Path | str,
    text_dir: Path | str | None,
    out_dir: Path | str,
    train_config: dict | None = None,
    tracking_uri: str | None = None,
    split_run_dir: Path | str | None = None,
    base_model: str = "",
) -> dict:
    """Train LLaRA++ with :func:`llarapp.training.llara.train_llara`, text cache seeded first:
    settings chosen on the split, then refitted on every playlist (``out_dir``, served); the
    split run's model (fitted on the training fold, scored by :func:`evaluate_models`) goes
    to ``split_run_dir``. With ``base_model`` (a folder, ``s3://`` or ``models:/NAME@ALIAS``,
    resolved here against ``tracking_uri``) the retraining path: that model's ranker is
    fine-tuned with LoRA (``train_config["lora_r"]``) instead of a new one trained.

    Files in: an ingest folder, a split folder, a :func:`text_features` folder (its cache shard
    is copied into ``$LLARAPP_CACHE``, so no text is embedded twice). Files out (``out_dir``):
    MODEL_DIR (``model.json``, ``arrays.npz``, ``als/``, ``*_projector.safetensors``,
    ``ranker/`` (Hugging Face), ``train_report.json``, ``reference/``: the held-out cases as
    the reference traffic profile of ``llarapp monitor``) and an MLflow run.

    Returns:
        ``{"reference_requests", "mlflow_run_id", "best_valid_ndcg", "train_cases",
        "valid_cases", "playlists":
        {"split_run", "served"}, "base_model": {"uri", "version"} or None, "seconds"}``.
    """
    from llarapp.training.llara import LlaraTrainConfig, train_llara

    config = LlaraTrainConfig.from_dict(
        coerce_numbers(train_config or {}, LlaraTrainConfig().to_dict())
    )
    seed_text_cache(text_dir)
    base = resolve_model(base_model, tracking_uri) if base_model else None
    model = train_llara(
        data_dir,
        split_dir,
        out_dir,
        config,
        tracking_uri=tracking_uri or None,
        split_run_dir=split_run_dir,
        base_model=base.path if base is not None else None,
    )
    from llarapp.monitoring import write_reference

    reference = write_reference(out_dir, data_dir, split_dir, model.encoder.encode)
    report = model.report
    last = report["history"][-1]
    return {
        "reference_requests": len(reference),
        "mlflow_run_id": last.get("mlflow_run_id", ""),
        "best_valid_ndcg": float(last.get("best_valid_ndcg", float("nan"))),
        "train_cases": report["train_cases"],
        "valid_cases": report["valid_cases"],
        "playlists": report["playlists"],
        "base_model": {"uri": base.uri, "version": base.version} if base is not None else None,
        "seconds": report["seconds"],
    }


# ----------------------------------------------------------------------------- evaluation


def evaluate_models(
    data_dir: Path | str,
    split_dir: Path | str,
    model_dir: Path | str,
    behavior_dir: Path | str | None,
    out_dir: Path | str,
    *,
    baselines: Sequence[str] | None = None,
    tune_max_cases: int = 400,
    k: int = 500,
) -> dict:
    """Score the trained model and the baselines on the same test cases, per category.

    The roster (:func:`llarapp.training.roster.fit_and_evaluate`) fits the baselines on the
    training fold and tunes them on the validation cases exactly as ``llarapp benchmark
    quality`` does; ``als`` is the one ``behavior_features`` tuned (refitted here only when
    ``behavior_dir`` has no ``als/``), and the candidate is loaded from ``model_dir``: the
    training run's split model (fitted on the training fold as the baselines are; the served
    model, refitted on every playlist, has seen the test fold), as the report says.

    Files in: an ingest folder, a split folder, MODEL_DIR, a behavior folder (``als/``).
    Files out (``out_dir``): ``evaluation.json`` (the quality-benchmark JSON:
    ``{"dataset", "models": {NAME: {"overall", "categories", "warm", "cold", "ms_per_case"}},
    "seconds", "candidate"}``), ``table.md`` and ``table.html`` (overall, then NDCG and
    R-precision per challenge category; :func:`llarapp.evaluation.report.format_tables`).

    Args:
        baselines: Names of :data:`llarapp.training.roster.BASELINES` (all of them when None).

    Raises:
        ValueError: A name in ``baselines`` is not a baseline.
    """
    from llarapp.config import TuneConfig
    from llarapp.evaluation.report import format_tables
    from llarapp.text import TextEncoder, default_cache_dir
    from llarapp.training.roster import BASELINES, Roster, fit_and_evaluate

    baselines = list(BASELINES if baselines is None else baselines)
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; expected some of {list(BASELINES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    roster = Roster.load(
        data_dir,
        split_dir,
        tune=TuneConfig(max_cases=tune_max_cases),
        encoder=TextEncoder(default_cache_dir(), progress=False),
    )
    saved = {CANDIDATE: Path(model_dir)}
    if behavior_dir is not None and (Path(behavior_dir) / "als").is_dir():
        saved["als"] = Path(behavior_dir) / "als"
    seconds: dict[str, float] = {}
    results = fit_and_evaluate(
        roster, [CANDIDATE, *baselines], saved=saved, k=k, progress=False, seconds=seconds
    )
    roster.encoder.flush()
    split_report = json.loads((Path(split_dir) / "split.json").read_text())
    result = {
        "candidate": CANDIDATE,
        "dataset": {
            "folds": split_report["playlists"],
            "valid_cases_used": len(roster.valid),
            "test_cases": len(roster.cases),
            "test_cases_per_category": split_report["cases"]["test"],
            "hidden_cold_share": round(split_report["hidden_cold_share"], 4),
            "fitted_on": "the training fold (the candidate: the split run of `llarapp train`; "
            "the model served is refitted on every playlist)",
        },
        "models": results,
        "seconds": seconds,
    }
    (out_dir / EVALUATION_FILE).write_text(json.dumps(result, indent=2))
    table = format_tables(result)
    (out_dir / "table.md").write_text(table + "\n")
    (out_dir / "table.html").write_text(markdown_tables_to_html(table, "LLaRA++ evaluation"))
    return result


def kfp_metrics(result: dict, metrics: Sequence[str] = ("ndcg", "r_precision", "clicks")) -> dict:
    """Flat scalar metrics of an evaluation for ``Output[Metrics]``: the candidate's overall and
    per-category figures, and each baseline's overall ones."""
    out: dict[str, float] = {}
    cand = result["models"][result.get("candidate", CANDIDATE)]
    for m in (*metrics, "recall@500"):
        out[f"test_{m}"] = float(cand["overall"][m])
    for cat, values in cand["categories"].items():
        out[f"test_{cat}_ndcg"] = float(values["ndcg"])
    for name, r in result["models"].items():
        if name != result.get("candidate", CANDIDATE):
            out[f"baseline_{name}_ndcg"] = float(r["overall"]["ndcg"])
    return out


def markdown_tables_to_html(markdown: str, title: str) -> str:
    """Render :func:`~llarapp.evaluation.report.format_tables` as a small HTML page."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>table{border-collapse:collapse;font-family:sans-serif;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}</style></head><body>",
        f"<h2>{html.escape(title)}</h2>",
    ]
    rows: list[list[str]] = []

    def flush() -> None:
        if not rows:
            return
        head, *body = rows
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>")
        for r in body:
            parts.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
        parts.append("</table>")
        rows.clear()

    for line in markdown.splitlines():
        s = line.strip()
        if s.startswith("|"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                rows.append(cells)
            continue
        flush()
        if s:
            parts.append(f"<p>{html.escape(s)}</p>")
    flush()
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- export

EXPORT_FORMATS = ("onnx", "none")


def export_available() -> bool:
    """Whether the ONNX export stage (:mod:`llarapp.export.onnx_export`, issue 4) is installed."""
    try:
        module = importlib.import_module("llarapp.export.onnx_export")
    except ImportError:
        return False
    return callable(getattr(module, "export_onnx", None))


def export_model_dir(
    model_dir: Path | str,
    out_dir: Path | str,
    *,
    export_format: str = "onnx",
    data_dir: Path | str | None = None,
    split_dir: Path | str | None = None,
    options: dict[str, Any] | None = None,
) -> dict:
    """Copy MODEL_DIR to ``out_dir`` and export it there.

    ``onnx`` runs :func:`llarapp.export.onnx_export.export_onnx` on the copy with
    ``ExportConfig(**options)`` (the validation cases of ``data_dir`` / ``split_dir`` check
    parity; training cases calibrate static QInt8); it writes ``out_dir/onnx/`` with
    ``manifest.json``. ``none`` writes only a manifest saying the model serves from PyTorch
    (``{"chosen": "pytorch_fp32", "variants": {}}``).

    Files in: MODEL_DIR, an ingest folder, a split folder. Files out (``out_dir``): a copy of
    MODEL_DIR plus ``onnx/`` (``manifest.json`` and, for ``onnx``, the ``.onnx`` files).

    Returns:
        The manifest.

    Raises:
        ValueError: ``export_format`` is not one of :data:`EXPORT_FORMATS`, or an option is not
            an ``ExportConfig`` field.
        ImportError: ``onnx`` was asked for and the export stage is not installed.
    """
    if export_format not in EXPORT_FORMATS:
        raise ValueError(f"export_format={export_format!r}: expected one of {EXPORT_FORMATS}")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / "model.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a MODEL_DIR (no model.json)")
    shutil.copytree(model_dir, out_dir, dirs_exist_ok=True)
    manifest_path = out_dir / "onnx" / "manifest.json"
    if export_format == "none":
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        manifest = {"chosen": "pytorch_fp32", "variants": {}, "reason": "export_format=none"}
        manifest_path.write_text(json.dumps(manifest, indent=2))
        return manifest
    if not export_available():
        raise ImportError(
            "export_format='onnx' needs llarapp.export.onnx_export.export_onnx (the ONNX export "
            "stage), which this installation lacks; pass export_format='none' to serve PyTorch"
        )
    if data_dir is None or split_dir is None:
        raise ValueError("export_format='onnx' needs data_dir and split_dir (parity cases)")
    from llarapp.config import from_json
    from llarapp.export.onnx_export import ExportConfig, export_onnx

    defaults = dataclasses.asdict(ExportConfig())
    config = from_json(ExportConfig, coerce_numbers(dict(options or {}), defaults))
    manifest = export_onnx(out_dir, data_dir, split_dir, config)
    if not manifest_path.is_file():
        raise FileNotFoundError(f"the export stage wrote no {manifest_path}")
    return manifest


# ----------------------------------------------------------------------------- continuous

RETRAIN_MARK = "retrain_mark.json"
"""In the feedback folder: the last feedback id handed to a retraining (:func:`decide_retrain`)."""


def drift_check(
    model: str,
    request_log: Path | str,
    out_dir: Path | str,
    *,
    window: int | None = None,
    tracking_uri: str | None = None,
) -> dict:
    """Has the traffic the model serves drifted from its reference profile?

    The latest ``window`` requests of the request log (``llarapp serve``'s event store) against
    ``MODEL/reference/`` (what training writes), as ``llarapp monitor check`` does. With fewer
    than ``window`` requests logged the check is not run (the thresholds were measured on windows
    of that size): no drift, and the result says why.

    Args:
        model: The served model: a folder, ``s3://`` or ``models:/NAME@ALIAS`` (resolved
            against ``tracking_uri``, as :func:`resolve_model`).
        request_log: The SQLite event store the server logs requests to (``--events``).
        out_dir: Where the report goes.
        window: Requests per check (default
            :data:`~llarapp.monitoring.DEFAULT_WINDOW`).

    Files out (``out_dir``): ``drift_report.html`` (the Evidently Report; a page with the
    decision and why when there were too few requests or Evidently could not draw it),
    ``drift_report.json`` and ``drift.json`` (:func:`llarapp.monitoring.write_report`, when it
    drew the report).

    Returns:
        ``{"drift", "checked", "reason", "window", "requests_logged", "model", "model_version",
        "drifted_columns", "reference_rows", "current_rows", "columns": {name: {"method",
        "score", "threshold", "drifted"}}}`` (``columns`` empty when not checked).

    Raises:
        ValueError: ``window`` is below 1, or the request log has no ``requests`` table.
        FileNotFoundError: The request log, the model or its ``reference/`` is missing.
    """
    from llarapp.monitoring import (
        DEFAULT_WINDOW,
        REFERENCE_DIR,
        Catalogue,
        Window,
        check_drift,
        window_from_log,
        write_report,
    )
    from llarapp.monitoring.report import HTML_FILE
    from llarapp.monitoring.window import logged_requests
    from llarapp.text import TextEncoder, default_cache_dir

    window = DEFAULT_WINDOW if window is None else int(window)
    if window < 1:
        raise ValueError(f"window={window}: expected at least 1 request per check")
    logged = logged_requests(request_log)
    resolved = resolve_model(model, tracking_uri)
    reference = resolved.path / REFERENCE_DIR
    if not (reference / "window.parquet").is_file():
        raise FileNotFoundError(
            f"{model}: no reference profile at {reference}; expected MODEL_DIR/{REFERENCE_DIR} "
            "as `llarapp train` and the pipeline's train stage write it (or make one with "
            "`llarapp monitor profile`)"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "window": window,
        "requests_logged": logged,
        "model": model,
        "model_version": resolved.version,
    }
    if logged < window:
        reason = (
            f"not checked: {logged} request(s) logged in {request_log}, fewer than the window "
            f"of {window}; no drift is reported until a whole window is logged"
        )
        page = markdown_tables_to_html(reason, "LLaRA++ drift check")
        (out_dir / HTML_FILE).write_text(page)
        return {
            **summary,
            "drift": False,
            "checked": False,
            "reason": reason,
            "drifted_columns": [],
            "reference_rows": 0,
            "current_rows": 0,
            "columns": {},
        }
    encode = TextEncoder(default_cache_dir(), progress=False).encode
    current = window_from_log(request_log, Catalogue.from_model(resolved.path), encode, last=window)
    profile = Window.load(reference)
    result = check_drift(profile, current).to_dict()
    drifted = result["drifted_columns"]
    reason = (
        f"drift in {', '.join(drifted)} over the latest {len(current)} requests"
        if drifted
        else f"no drift over the latest {len(current)} requests"
    )
    try:
        write_report(profile, current, out_dir)
    except ValueError as exc:  # e.g. a column empty in the window: Evidently draws nothing
        log.warning("drift report not drawn (%s); the decision stands: %s", exc, reason)
        page = f"{reason}.\n\nEvidently could not draw the report: {exc}"
        (out_dir / HTML_FILE).write_text(markdown_tables_to_html(page, "LLaRA++ drift check"))
    return {**summary, **result, "checked": True, "reason": reason}


def drift_metrics(check: dict) -> dict[str, float]:
    """Flat scalars of a :func:`drift_check` result for ``Output[Metrics]``: ``drift`` and
    ``checked`` (1/0), ``window``, ``requests_logged``, and per column ``score_<column>`` (its
    p-value, or the embedding classifier's ROC AUC) and ``drifted_<column>`` (1/0); a column with
    nothing to compare (no score) is left out."""
    out = {
        "drift": float(check["drift"]),
        "checked": float(check["checked"]),
        "window": float(check["window"]),
        "requests_logged": float(check["requests_logged"]),
    }
    for name, column in check["columns"].items():
        if column["score"] == column["score"]:  # not NaN
            out[f"score_{name}"] = float(column["score"])
            out[f"drifted_{name}"] = float(column["drifted"])
    return out


def export_feedback_batch(
    events: Path | str,
    feedback_out: Path | str,
    model: str,
    batch_dir: Path | str,
    *,
    tracking_uri: str | None = None,
) -> dict:
    """Export the feedback that arrived since the last export (exactly once:
    :func:`llarapp.serving.feedback.export_feedback`) into ``feedback_out``, and copy the new
    batch folder to ``batch_dir``.

    Args:
        events: The server's event store (``--events``).
        feedback_out: The folder that collects every batch (``llarapp feedback export --out``).
        model: The served model (its ``track_names.parquet`` names the tracks); resolved as in
            :func:`resolve_model`.
        batch_dir: Where the new batch is copied (the pipeline's artifact).

    Files out: ``feedback_out/feedback-A-B/`` (``mpd.slice.A-B.json``, ``negatives.parquet``,
    ``batch.json``) and its copy in ``batch_dir``; with nothing new, only ``batch_dir/batch.json``
    (``{"folder": null, "events": 0}``).

    Returns:
        The export's counts (``events`` 0 and ``folder`` None when nothing arrived), and
        ``feedback_uri``: ``feedback_out`` when it holds a batch (of this export or an earlier
        one), else empty -- what a retraining's ingest reads.
    """
    from llarapp.serving.feedback import export_feedback

    resolved = resolve_model(model, tracking_uri)
    summary = export_feedback(events, feedback_out, [resolved.path])
    batch_dir = Path(batch_dir)
    if summary["folder"]:
        shutil.copytree(summary["folder"], batch_dir, dirs_exist_ok=True)
    else:
        batch_dir.mkdir(parents=True, exist_ok=True)
        (batch_dir / "batch.json").write_text(json.dumps(summary, indent=2))
    held = pending_feedback(feedback_out)["total_batches"]
    return {**summary, "feedback_uri": str(Path(feedback_out).resolve()) if held else ""}


def pending_feedback(feedback_out: Path | str) -> dict:
    """The exported feedback no retraining has been handed yet: the batches of ``feedback_out``
    above the mark :func:`decide_retrain` leaves (``RETRAIN_MARK``).

    Returns:
        ``{"events", "batches" (folder names), "last_id" (the newest batch's, 0 when none),
        "marked" (the mark's last id, 0 when none), "total_batches"}``.
    """
    from llarapp.pipeline.deploy import read_pointer

    folder = Path(feedback_out)
    mark = read_pointer(folder, RETRAIN_MARK) if folder.is_dir() else None
    marked = int(mark["last_id"]) if mark else 0
    batches = {
        path.parent.name: json.loads(path.read_text())
        for path in sorted(folder.glob("feedback-*/batch.json"))
    }
    pending = {name: b for name, b in batches.items() if b["last_id"] > marked}
    return {
        "events": sum(b["events"] for b in pending.values()),
        "batches": list(pending),
        "last_id": max((b["last_id"] for b in batches.values()), default=0),
        "marked": marked,
        "total_batches": len(batches),
    }


def decide_retrain(
    drift: bool, drift_reason: str, feedback_out: Path | str, min_feedback: int
) -> dict:
    """Retrain when the traffic drifted or at least ``min_feedback`` feedback events await a
    retraining (:func:`pending_feedback`); the one bool the continuous pipeline's ``dsl.If``
    reads, and why.

    A retraining fine-tunes the champion on the fresh data and *every* batch in
    ``feedback_out`` (:func:`export_feedback_batch`'s ``feedback_uri``). When it retrains, the
    newest batch's last id is written to ``feedback_out/retrain_mark.json``, so the next count
    starts after it, whether or not the new model passes the gate (a refused model does not
    start another retraining on the same feedback; drift still can).

    Returns:
        ``{"retrain", "reason", "drift", "drift_reason", "pending_feedback", "min_feedback",
        "pending_batches", "marked"}``.

    Raises:
        ValueError: ``min_feedback`` is below 1.
    """
    from datetime import UTC, datetime

    from llarapp.pipeline.deploy import write_pointer

    if min_feedback < 1:
        raise ValueError(f"min_feedback={min_feedback}: expected at least 1 feedback event")
    pending = pending_feedback(feedback_out)
    enough = pending["events"] >= min_feedback
    retrain = bool(drift or enough)
    reason = (
        f"{'retrain' if retrain else 'no retraining'}: {drift_reason}; {pending['events']} "
        f"feedback event(s) await a retraining ({'>=' if enough else '<'} min_feedback "
        f"{min_feedback})"
    )
    marked = pending["marked"]
    if retrain and pending["last_id"] > marked:
        marked = pending["last_id"]
        mark = {"last_id": marked, "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "reason": reason}  # fmt: skip
        write_pointer(feedback_out, RETRAIN_MARK, mark)
    return {
        "retrain": retrain,
        "reason": reason,
        "drift": bool(drift),
        "drift_reason": drift_reason,
        "pending_feedback": pending["events"],
        "min_feedback": min_feedback,
        "pending_batches": pending["batches"],
        "marked": marked,
    }
