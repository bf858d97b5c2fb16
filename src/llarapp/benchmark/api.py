"""``llarapp benchmark api``: the quality of what a user deploys, measured through the HTTP API.

``llarapp benchmark api --mpd DIR --out FILE.json`` runs the product as a user does and scores
its answers as ``llarapp benchmark quality`` scores a model:

1. ingests ``--mpd`` and splits it exactly as the quality benchmark does (same seed, same
   distractor share), so both score the same test cases on the same catalogue;
2. writes the training playlists (the training and validation folds) as an ingest folder that
   keeps the whole catalogue (:func:`llarapp.data.split.subset_ingest`);
3. runs ``llarapp train --data THAT --out MODEL`` in a subprocess (settings chosen on its own
   split, then refitted on every one of those playlists);
4. starts ``llarapp serve --model MODEL`` on loopback and sends every test case as one
   ``POST /v1/recommend`` in the documented shape (``name`` when the case has a title,
   ``tracks`` with ``track_name``, ``artist_name`` and ``track_uri``, ``k``);
5. scores the answers with the project's metrics, beside the baselines tuned on the validation
   cases and fitted on the same training playlists (the roster with ``refit``).

JSON written to ``out``: ``{"dataset": {...}, "models": {"llara++": {...}, BASELINE: {...}},
"ratios": {"overall", "categories": {CATEGORY: x}, "title_only_over_title_knn", "best_baseline"},
"train": {"playlists", "best_valid_ndcg", "ranker", "seconds"}, "seconds": {STAGE: s}}``; the
table printed is the quality benchmark's, with the ratios under it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from llarapp.benchmark.quality import DISTRACTOR_FRAC, catalogue_counts, ingest_and_split
from llarapp.benchmark.timing import timed
from llarapp.config import TuneConfig
from llarapp.data.dataset import Case
from llarapp.data.split import subset_ingest
from llarapp.evaluation.evaluate import evaluate
from llarapp.evaluation.report import format_tables
from llarapp.serving.client import free_port, post_json, stop_server, wait_ready
from llarapp.serving.request import request_body
from llarapp.text import TextEncoder, default_cache_dir
from llarapp.training.roster import BASELINES, TRAINING_FOLDS, Roster, fit_and_evaluate

log = logging.getLogger(__name__)
MODEL = "llara++"


class ServedModel:
    """A recommender that is ``llarapp serve`` at ``url``: what :func:`evaluate` scores."""

    name = MODEL

    def __init__(self, url: str) -> None:
        self.url = url

    def recommend(self, case: Case, k: int = 500) -> list[str]:
        status, out = post_json(self.url, "/v1/recommend", request_body(case, k))
        if status != 200:
            raise RuntimeError(f"POST {self.url}/v1/recommend answered {status}: {out}")
        return [t["track_uri"] for t in out["recommended_tracks"]]


def run_api_benchmark(
    mpd: str,
    out: Path | str,
    *,
    seed: int = 0,
    max_playlists: int | None = None,
    baselines: Sequence[str] = BASELINES,
    work_dir: Path | str | None = None,
    tune: TuneConfig | None = None,
    k: int = 500,
    distractor_frac: float = DISTRACTOR_FRAC,
    epochs: int | None = None,
) -> dict:
    """Train with ``llarapp train``, serve with ``llarapp serve``, score over HTTP.

    Args:
        mpd: A folder of MPD slice files.
        out: Where the JSON goes.
        seed: Split seed (the quality benchmark's ``--seed``).
        max_playlists: Ingest at most this many playlists (all when None).
        baselines: Names of :data:`llarapp.training.roster.BASELINES`, in table order.
        work_dir: Keep ``data/``, ``split/``, ``training-data/``, ``model/`` and the logs here
            (a temporary folder when None).
        tune: Baseline tuning grid and validation cases.
        k: Recommendations per case.
        distractor_frac: Share of playlists set aside as distractors (the quality benchmark's).
        epochs: ``llarapp train --epochs`` (its default when None).

    Raises:
        ValueError: A name in ``baselines`` is not a baseline.
        RuntimeError: ``llarapp train`` failed, or the server answered a case with an error.
    """
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; expected some of {list(BASELINES)}")
    tune = tune or TuneConfig()
    with tempfile.TemporaryDirectory(prefix="llarapp-api-") as tmp:
        work = Path(work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        seconds: dict[str, float] = {}
        ingest_and_split(
            mpd, work, seconds, seed=seed, max_playlists=max_playlists,
            distractor_frac=distractor_frac,
        )  # fmt: skip
        subset_ingest(work / "data", work / "split", TRAINING_FOLDS, work / "training-data")
        with timed(seconds, "llarapp train"):
            train = _train(work, seed, epochs)
        roster = Roster.load(
            work / "data",
            work / "split",
            tune=tune,
            encoder=TextEncoder(default_cache_dir()),
            refit=True,
        )
        with timed(seconds, "llarapp serve"):
            served = _serve_and_score(work, roster, k)
        results = {MODEL: served, **fit_and_evaluate(roster, baselines, k=k, seconds=seconds)}
        for name, trials in roster.tuning.items():
            results[name]["tuning"] = trials
        roster.encoder.flush()
        dataset = {"source": str(mpd), "seed": seed, **catalogue_counts(roster)}
        dataset |= {"test_cases": len(roster.cases)}
    result = {
        "dataset": dataset,
        "models": results,
        "ratios": ratios(results),
        "train": train,
        "seconds": seconds,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    return result


def _train(work: Path, seed: int, epochs: int | None) -> dict:
    args = ["train", "--data", str(work / "training-data"), "--out", str(work / "model")]
    args += ["--work", str(work / "train-work"), "--seed", str(seed)]
    args += ["--epochs", str(epochs)] if epochs else []
    with open(work / "train.log", "wb") as log_file:
        done = subprocess.run(
            [sys.executable, "-m", "llarapp", *args], stdout=log_file, stderr=subprocess.STDOUT
        )
    if done.returncode:
        tail = (work / "train.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"llarapp train failed ({done.returncode}); its log ends:\n{tail}")
    report = json.loads((work / "model" / "train_report.json").read_text())
    return {
        "playlists": report["playlists"],
        "best_valid_ndcg": report["history"][-1]["best_valid_ndcg"],
        "ranker": report["ranker"],
        "seconds": report["seconds"],
    }


def _serve_and_score(work: Path, roster: Roster, k: int) -> dict:
    port = free_port()
    args = ["serve", "--model", str(work / "model"), "--port", str(port)]
    args += ["--events", str(work / "events.db")]
    with open(work / "serve.log", "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llarapp", *args], stdout=log_file, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        return evaluate(ServedModel(url), roster.cases, artist_of=roster.artist_of, k=k)
    finally:
        stop_server(proc)


def ratios(results: dict) -> dict:
    """LLaRA++ over the best baseline: overall NDCG (the best baseline by overall NDCG), every
    category (its best baseline there), and title-only over title-kNN."""
    baselines = {n: r for n, r in results.items() if n != MODEL}
    ours = results[MODEL]
    best = max(baselines, key=lambda n: baselines[n]["overall"]["ndcg"])
    categories = {}
    for c, r in ours["categories"].items():
        top = max(b["categories"].get(c, {}).get("ndcg", 0.0) for b in baselines.values())
        categories[c] = round(r["ndcg"] / top, 4) if top else float("inf")
    out = {
        "best_baseline": best,
        "overall": round(ours["overall"]["ndcg"] / baselines[best]["overall"]["ndcg"], 4),
        "categories": categories,
    }
    title_knn = baselines.get("title_knn", {}).get("categories", {}).get("title_only")
    if title_knn and "title_only" in ours["categories"]:
        out["title_only_over_title_knn"] = round(
            ours["categories"]["title_only"]["ndcg"] / title_knn["ndcg"], 4
        )
    return out


def format_result(result: dict) -> str:
    """The quality benchmark's tables, then the ratios."""
    r = result["ratios"]
    lines = [format_tables(result), ""]
    lines.append(f"llara++ (through the API) / {r['best_baseline']}: {r['overall']:.3f}x overall")
    cats = ", ".join(f"{c} {x:.3f}x" for c, x in r["categories"].items())
    lines.append(f"per category (over that category's best baseline): {cats}")
    if "title_only_over_title_knn" in r:
        lines.append(f"title only / title_knn: {r['title_only_over_title_knn']:.3f}x")
    return "\n".join(lines)
