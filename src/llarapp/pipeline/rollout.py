"""The canary rollout's rules: promote, roll back or wait, from each version's live figures.

A canary serves the ``challenger`` to a share of traffic beside the ``champion``. The
controller (``llarapp rollout``) reads both versions' live figures -- requests, errors, p99
latency, likes and dislikes -- and :func:`decide` applies these written rules, in order:

1. **Roll back at once** when the challenger is clearly broken: its error rate exceeds the
   champion's by more than ``max_error_increase`` (absolute) and a one-sided two-proportion
   z-test says it is higher with p < ``alpha``; or, with at least ``min_requests`` requests
   each, its p99 latency exceeds ``max_p99_ratio`` times the champion's and so does its median
   (slow across the board: on a shared machine one stalled request is a small sample's p99).
2. **Wait** while either version has fewer than ``min_requests`` requests or fewer than
   ``min_feedback`` like/dislike events: no decision from a small sample.
3. **Roll back** when the challenger's like-rate is lower than the champion's by more than
   ``like_margin`` with significance (one-sided two-proportion z-test, p < ``alpha``).
4. **Promote** otherwise: enough evidence, nothing worse (non-inferiority).

Every decision carries its evidence (both versions' figures, the test statistics and p-values,
the rules). :func:`act` carries it out on the registry and the deploy pointers, and records it:
one JSON line in the audit log and ``llarapp.rollout.*`` tags on the challenger's registered
version.

- promote: MLflow ``champion`` -> the challenger's version, ``canary`` removed;
  ``current.json`` becomes the challenger's pointer (alias ``champion``), ``challenger.json``
  is marked ``promoted``;
- rollback: ``canary`` removed, ``champion`` and ``current.json`` untouched (the champion kept
  serving throughout); ``challenger.json`` is marked ``rolled_back``;
- wait: nothing moves; the decision is still recorded.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llarapp.pipeline.deploy import CHALLENGER_POINTER, POINTER, read_pointer, write_pointer
from llarapp.pipeline.registry import CANARY, CHAMPION, MODEL_NAME, registry_client
from llarapp.serving.client import get, post_json
from llarapp.serving.store import read_feedback

PROMOTE, ROLLBACK, WAIT = "promote", "rollback", "wait"


@dataclass(frozen=True)
class RolloutRules:
    """What the challenger must show before it takes all traffic, and what sends it back."""

    min_requests: int = 200  # per version, before the latency and like-rate rules decide
    min_feedback: int = 50  # like/dislike events per version, before promotion
    alpha: float = 0.05  # one-sided significance of "the challenger is worse"
    max_error_increase: float = 0.01  # absolute error-rate increase tolerated
    max_p99_ratio: float = 1.5  # challenger / champion p99 (and median) tolerated
    like_margin: float = 0.0  # absolute like-rate decrease tolerated

    def __post_init__(self) -> None:
        checks = {
            "min_requests": self.min_requests >= 1,
            "min_feedback": self.min_feedback >= 1,
            "alpha": 0 < self.alpha < 1,
            "max_error_increase": 0 <= self.max_error_increase < 1,
            "max_p99_ratio": self.max_p99_ratio >= 1,
            "like_margin": 0 <= self.like_margin < 1,
        }
        expected = {
            "min_requests": ">= 1",
            "min_feedback": ">= 1",
            "alpha": "0 < x < 1",
            "max_error_increase": "0 <= x < 1",
            "max_p99_ratio": ">= 1",
            "like_margin": "0 <= x < 1",
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(
                    f"RolloutRules.{name}={getattr(self, name)!r} is invalid: "
                    f"expected {expected[name]}"
                )


@dataclass(frozen=True)
class VersionStats:
    """One model version's live figures over the rollout's window."""

    version: str
    requests: int  # answered or failed
    errors: int  # failed (5xx) among them
    p99_ms: float  # latency of answered requests (nan when none)
    likes: int
    dislikes: int
    p50_ms: float = float("nan")  # their median (nan: unknown; then the p99 decides alone)

    def __post_init__(self) -> None:
        for name in ("requests", "errors", "likes", "dislikes"):
            if getattr(self, name) < 0:
                raise ValueError(f"VersionStats.{name}={getattr(self, name)}: expected >= 0")
        if self.errors > self.requests:
            raise ValueError(
                f"VersionStats of v{self.version}: {self.errors} errors in {self.requests} "
                "requests; expected errors <= requests"
            )

    @property
    def feedback(self) -> int:
        return self.likes + self.dislikes

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def like_rate(self) -> float:
        return self.likes / self.feedback if self.feedback else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate, "like_rate": self.like_rate}


@dataclass(frozen=True)
class RolloutDecision:
    """What :func:`decide` concluded, why, and every figure it used."""

    action: str  # promote | rollback | wait
    reason: str
    champion: VersionStats
    challenger: VersionStats
    rules: RolloutRules
    tests: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "reason": self.reason,
            "champion": self.champion.to_dict(),
            "challenger": self.challenger.to_dict(),
            "rules": asdict(self.rules),
            "tests": self.tests,
        }


def worse_test(
    base_hits: int, base_n: int, new_hits: int, new_n: int, margin: float = 0.0
) -> dict[str, float]:
    """One-sided two-proportion z-test of ``new rate < base rate - margin`` (pooled variance).

    Returns:
        ``{"base_rate", "new_rate", "z", "p"}``; ``p`` is 1.0 when either sample is empty.
    """
    if base_n == 0 or new_n == 0:
        return {"base_rate": float("nan"), "new_rate": float("nan"), "z": 0.0, "p": 1.0}
    p1, p2 = base_hits / base_n, new_hits / new_n
    pooled = (base_hits + new_hits) / (base_n + new_n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / base_n + 1 / new_n))
    diff = p2 - (p1 - margin)
    z = diff / se if se > 0 else 0.0  # se 0: every event alike in both, nothing is worse
    p = 0.5 * math.erfc(-z / math.sqrt(2))  # P(Z <= z): small when new is clearly lower
    return {"base_rate": p1, "new_rate": p2, "z": z, "p": p}


def live_stats(server: str, events: Path | str) -> tuple[VersionStats, VersionStats]:
    """Champion's and challenger's figures over the canary's window, from a canary server and
    its event store.

    ``GET /v1/canary`` names the two versions and gives each one's answers since this pair
    began to split traffic (``window``: requests, 5xx errors, exact p50 / p99 latency); likes
    and dislikes are the feedback rows of each version in ``events`` from the window's start.
    Both versions are measured over the same traffic: the champion's answers from before the
    canary (another mix of requests, before a drift alarm) never enter the comparison. With
    ``--workers N`` a request reaches one worker, so give the controller a one-worker server.

    Raises:
        RuntimeError: The server has no challenger or did not answer.
        FileNotFoundError: ``events`` does not exist.
    """
    try:
        status, body = get(server, "/v1/canary")
    except OSError as exc:
        raise RuntimeError(f"{server}: no canary server answers ({exc})") from exc
    if status != 200:
        raise RuntimeError(f"GET {server}/v1/canary answered {status}: {body[:300]}")
    state = json.loads(body)
    if state.get("challenger") is None:
        raise RuntimeError(f"{server}: no challenger to compare (GET /v1/canary: {state})")
    if not Path(events).is_file():
        raise FileNotFoundError(f"{events}: no event store; expected the server's --events file")
    window = state["window"]
    feedback = [] if window["since"] is None else read_feedback(events, since=window["since"])

    def stats(version: str) -> VersionStats:
        answers = window["versions"].get(version, {})
        liked = [bool(r["liked"]) for r in feedback if r["model_version"] == version]
        return VersionStats(
            version=version,
            requests=answers.get("requests", 0),
            errors=answers.get("errors", 0),
            p99_ms=_ms(answers.get("p99_ms")),
            likes=sum(liked),
            dislikes=len(liked) - sum(liked),
            p50_ms=_ms(answers.get("p50_ms")),
        )

    return stats(state["champion"]), stats(state["challenger"])


def _ms(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def decide(
    champion: VersionStats, challenger: VersionStats, rules: RolloutRules | None = None
) -> RolloutDecision:
    """Apply the rollout rules (module docstring) to the two versions' figures."""
    rules = rules or RolloutRules()

    def verdict(action: str, reason: str, **tests: dict[str, float]) -> RolloutDecision:
        return RolloutDecision(action, reason, champion, challenger, rules, tests)

    # errors: "the challenger's success rate is lower" is "its error rate is higher"
    errors = worse_test(
        champion.requests - champion.errors,
        champion.requests,
        challenger.requests - challenger.errors,
        challenger.requests,
    )
    excess = challenger.error_rate - champion.error_rate
    if excess > rules.max_error_increase and errors["p"] < rules.alpha:
        return verdict(
            ROLLBACK,
            f"v{challenger.version} error rate {challenger.error_rate:.2%} against "
            f"{champion.error_rate:.2%} (p={errors['p']:.3g})",
            errors=errors,
        )
    enough_requests = min(champion.requests, challenger.requests) >= rules.min_requests
    ratio = challenger.p99_ms / champion.p99_ms if champion.p99_ms > 0 else float("nan")
    median = challenger.p50_ms / champion.p50_ms if champion.p50_ms > 0 else float("nan")
    slow_median = math.isnan(median) or median > rules.max_p99_ratio
    if enough_requests and ratio > rules.max_p99_ratio and slow_median:
        return verdict(
            ROLLBACK,
            f"v{challenger.version} p99 {challenger.p99_ms:.1f} ms is {ratio:.2f}x the "
            f"champion's {champion.p99_ms:.1f} ms (median {median:.2f}x)",
            errors=errors,
        )
    if not enough_requests or min(champion.feedback, challenger.feedback) < rules.min_feedback:
        return verdict(
            WAIT,
            f"too few events to decide: requests {champion.requests} / {challenger.requests}, "
            f"feedback {champion.feedback} / {challenger.feedback} (champion / challenger; "
            f"need {rules.min_requests} requests and {rules.min_feedback} feedback each)",
            errors=errors,
        )
    likes = worse_test(
        champion.likes, champion.feedback, challenger.likes, challenger.feedback,
        rules.like_margin,
    )  # fmt: skip
    if likes["p"] < rules.alpha:
        return verdict(
            ROLLBACK,
            f"v{challenger.version} like-rate {challenger.like_rate:.1%} is below the "
            f"champion's {champion.like_rate:.1%} (p={likes['p']:.3g})",
            errors=errors,
            likes=likes,
        )
    return verdict(
        PROMOTE,
        f"v{challenger.version}: like-rate {challenger.like_rate:.1%} against "
        f"{champion.like_rate:.1%} (not worse, p={likes['p']:.3g}), error rate "
        f"{challenger.error_rate:.2%}, p99 ratio {ratio:.2f}",
        errors=errors,
        likes=likes,
    )


def act(
    decision: RolloutDecision,
    *,
    audit_log: Path | str,
    server: str | None = None,
    target: str | Path | None = None,
    tracking_uri: str | None = None,
    model_name: str = MODEL_NAME,
    cluster: Callable[[str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Carry out ``decision`` (module docstring) and record it; returns the audit record.

    Traffic moves first (a rollback stops the challenger's answers before anything else), then
    the deploy pointers, then the registry. A wait moves nothing and is still recorded.

    Args:
        decision: From :func:`decide`.
        audit_log: JSON lines, one record a decision, appended and fsync'd.
        server: The server's base URL (``POST /v1/canary``: 100 on promote, 0 on rollback);
            None leaves its traffic alone.
        target: The deploy target holding ``current.json`` / ``challenger.json`` (a local
            folder or ``s3://``); its ``challenger.json`` names the registered version.
        tracking_uri: The MLflow registry whose aliases move (needs ``target``); None leaves
            the registry alone.
        model_name: The registered model.
        cluster: Moves a cluster's traffic for a promote or rollback, given the action, and
            returns what it moved (e.g. :func:`llarapp.pipeline.cluster.move_traffic` bound to
            a namespace: the InferenceGraph's Splitter); None leaves the cluster alone.

    Raises:
        ValueError: A promotion or rollback while ``target`` has no live ``challenger.json``,
            or a registry without a target (nothing is moved then).
        RuntimeError: The server refused the new split.
    """
    now = datetime.now(UTC).isoformat(timespec="seconds")
    moving = decision.action in (PROMOTE, ROLLBACK)
    pointer = read_pointer(target, CHALLENGER_POINTER) if target is not None else None
    if moving and target is not None and (pointer is None or pointer.get("alias") != "challenger"):
        raise ValueError(
            f"{decision.action}: {target}/{CHALLENGER_POINTER} is "
            f"{'missing' if pointer is None else 'not a live challenger'}; expected the "
            "deployed challenger's pointer (alias challenger)"
        )
    if tracking_uri is not None and target is None:
        raise ValueError("act: moving registry aliases needs target (its challenger.json)")
    moved: dict[str, Any] = {}
    if moving and server is not None:
        percent = 100 if decision.action == PROMOTE else 0
        status, out = post_json(server, "/v1/canary", {"percent": percent})
        if status != 200:
            raise RuntimeError(f"POST {server}/v1/canary answered {status}: {out}")
        moved["traffic_percent"] = percent
    if moving and cluster is not None:
        moved["cluster"] = cluster(decision.action)
    if moving and pointer is not None:
        if decision.action == PROMOTE:
            champion = {**pointer, "alias": CHAMPION, "promoted_at": now}
            moved["current.json"] = write_pointer(target, POINTER, champion)
        status = "promoted" if decision.action == PROMOTE else "rolled_back"
        done = {**pointer, "alias": status, f"{status}_at": now}
        moved["challenger.json"] = write_pointer(target, CHALLENGER_POINTER, done)
    if tracking_uri is not None and pointer is not None:
        moved |= _move_aliases(decision, str(pointer["version"]), tracking_uri, model_name, now)
    record = {"at": now, "model_name": model_name, **decision.to_dict(), "moved": moved}
    _append(Path(audit_log), record)
    return record


def _move_aliases(
    decision: RolloutDecision, version: str, tracking_uri: str, model_name: str, now: str
) -> dict[str, Any]:
    """The registry's side of :func:`act` on registered ``version``: aliases and tags."""
    client, _ = registry_client(tracking_uri)
    moved: dict[str, Any] = {"registered_version": version}
    if decision.action == PROMOTE:
        client.set_registered_model_alias(model_name, CHAMPION, version)
        moved["champion"] = version
    if decision.action != WAIT and CANARY in client.get_registered_model(model_name).aliases:
        client.delete_registered_model_alias(model_name, CANARY)
        moved["canary"] = None
    for key, value in {
        "llarapp.rollout.action": decision.action,
        "llarapp.rollout.reason": decision.reason[:4000],
        "llarapp.rollout.at": now,
    }.items():
        client.set_model_version_tag(model_name, version, key, value)
    return moved


def _append(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, default=float) + "\n")
        f.flush()
        os.fsync(f.fileno())
