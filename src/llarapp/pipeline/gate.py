"""The promotion gate: does the new model beat the baselines and the current champion?

Rule (``metric`` over all test cases, higher is better; margins are absolute)::

    passed = candidate > best_baseline + margin_over_baselines
             and (no champion or candidate > champion + margin_over_champion)

"Beat" is strict: a model that only ties the champion (the same model retrained from a cache)
is not promoted. A negative margin tolerates a model that is worse by at most that much. The
champion is scored on the *same* test cases as the candidate (see
:func:`llarapp.pipeline.registry.score_champion`), never compared through figures from another
split.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateConfig:
    """What the new model must beat, and by how much."""

    metric: str = "ndcg"  # an overall metric of llarapp.evaluation.evaluate
    margin_over_baselines: float = 0.0  # absolute; must beat the best baseline by more
    margin_over_champion: float = 0.0  # absolute; must beat the current champion by more

    def __post_init__(self) -> None:
        for name in ("margin_over_baselines", "margin_over_champion"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ValueError(f"GateConfig.{name}={value!r}: expected a finite number")
        if not self.metric:
            raise ValueError("GateConfig.metric is empty: expected a metric name such as 'ndcg'")


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict with every number it used."""

    passed: bool
    reason: str
    metric: str
    candidate: float
    best_baseline: str | None
    best_baseline_score: float | None
    champion_version: str | None
    champion_score: float | None
    margin_over_baselines: float
    margin_over_champion: float

    def to_dict(self) -> dict:
        return asdict(self)


def decide(
    evaluation: dict,
    config: GateConfig,
    champion: tuple[str, float] | None = None,
) -> GateDecision:
    """Apply the gate to an ``evaluation.json`` (:func:`~.stages.evaluate_models`).

    Args:
        evaluation: ``{"candidate": NAME, "models": {NAME: {"overall": {metric: x}}}}``.
        config: Metric and margins.
        champion: ``(version, score on the same test cases)`` of the current champion, or None.

    Raises:
        ValueError: The candidate or the metric is missing from ``evaluation``.
    """
    name = evaluation.get("candidate", "llara++")
    models = evaluation.get("models", {})
    if name not in models:
        raise ValueError(f"evaluation has no results for the candidate {name!r}: {list(models)}")
    overall = models[name]["overall"]
    if config.metric not in overall:
        raise ValueError(
            f"gate metric {config.metric!r} not in the evaluation; expected one of "
            f"{sorted(k for k in overall if k != 'cases')}"
        )
    score = float(overall[config.metric])
    baselines = {n: float(r["overall"][config.metric]) for n, r in models.items() if n != name}
    best = max(baselines, key=baselines.get) if baselines else None
    best_score = baselines[best] if best else None
    reasons, passed = [], True
    if best is not None:
        need = best_score + config.margin_over_baselines
        if score > need:
            reasons.append(
                f"{config.metric} {score:.4f} beats best baseline {best} {best_score:.4f} "
                f"+ margin {config.margin_over_baselines:g}"
            )
        else:
            passed = False
            reasons.append(
                f"{config.metric} {score:.4f} does not beat best baseline {best} "
                f"{best_score:.4f} + margin {config.margin_over_baselines:g}"
            )
    if champion is None:
        reasons.append("no champion yet")
    else:
        version, champ = champion
        need = champ + config.margin_over_champion
        if score > need:
            reasons.append(
                f"beats champion v{version} {champ:.4f} + margin {config.margin_over_champion:g}"
            )
        else:
            passed = False
            reasons.append(
                f"does not beat champion v{version} {champ:.4f} "
                f"+ margin {config.margin_over_champion:g}"
            )
    return GateDecision(
        passed=passed,
        reason=("PASSED: " if passed else "FAILED: ") + "; ".join(reasons),
        metric=config.metric,
        candidate=score,
        best_baseline=best,
        best_baseline_score=best_score,
        champion_version=champion[0] if champion else None,
        champion_score=champion[1] if champion else None,
        margin_over_baselines=config.margin_over_baselines,
        margin_over_champion=config.margin_over_champion,
    )
