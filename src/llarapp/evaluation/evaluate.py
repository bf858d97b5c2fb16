"""Score a recommender on evaluation cases: overall, per category, and per warm/cold track.

Warm/cold: each case is scored a second time against only its warm hidden tracks (seen in a
training playlist) and against only its cold ones, where it has any; a model that cannot
recommend unseen tracks scores 0 on "cold".
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from tqdm.auto import tqdm

from llarapp.data.dataset import EvalCase
from llarapp.evaluation.metrics import MetricAccumulator, case_metrics
from llarapp.models.base import Recommender

HEADLINE = ("r_precision", "ndcg", "clicks", "recall@500")


def evaluate(
    model: Recommender,
    cases: Sequence[EvalCase],
    *,
    artist_of: Mapping[str, str] | None = None,
    k: int = 500,
    progress: bool = True,
) -> dict:
    """Mean metrics of ``model`` over ``cases``.

    Returns:
        ``{"overall": {metric: mean, "cases": n}, "categories": {name: {...}},
        "warm": {...}, "cold": {...}, "ms_per_case": x}``.
    """
    if not cases:
        raise ValueError("evaluate() got no cases: check the split (playlists too short?)")
    acc = MetricAccumulator()
    start = time.perf_counter()
    bar = tqdm(cases, desc=f"eval {model.name}", unit="case", disable=not progress, leave=False)
    for ec in bar:
        recs = model.recommend(ec.case, k)
        acc.add(
            ["overall", f"category:{ec.case.category}"],
            case_metrics(recs, ec.hidden, artist_of=artist_of, k=k),
        )
        for group, want_cold in (("warm", False), ("cold", True)):
            part = [u for u, c in zip(ec.hidden, ec.hidden_cold, strict=True) if c == want_cold]
            if part:
                acc.add([group], case_metrics(recs, part, artist_of=artist_of, k=k))
    elapsed = time.perf_counter() - start
    summary = acc.summary()
    prefix = "category:"
    return {
        "overall": summary["overall"],
        "categories": {
            g[len(prefix) :]: v for g, v in sorted(summary.items()) if g.startswith(prefix)
        },
        "warm": summary.get("warm", {}),
        "cold": summary.get("cold", {}),
        "ms_per_case": 1000.0 * elapsed / len(cases),
    }
