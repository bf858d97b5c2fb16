"""Hand-computed checks of the RecSys Challenge 2018 metrics."""

import math

import numpy as np
import pytest

from llarapp.evaluation.metrics import (
    CLICKS_NONE,
    METRIC_NAMES,
    MetricAccumulator,
    case_metrics,
    clicks,
    ndcg,
    r_precision,
    recall_at,
)


def _ranked(n: int, at: dict[int, str]) -> list[str]:
    """``n`` filler ids ``f0, f1, ...`` with the given ids placed at the given 0-based ranks."""
    out = [f"f{i}" for i in range(n)]
    for rank, track in at.items():
        out[rank] = track
    return out


# --- R-precision ---------------------------------------------------------------------------


def test_r_precision_track_level() -> None:
    # R = |{a, b, c}| = 3; top-3 = [a, x, b] -> 2 hits -> 2/3.
    assert r_precision(["a", "x", "b", "y", "c"], ["a", "b", "c"]) == pytest.approx(2 / 3)


def test_r_precision_no_hits_and_all_hits() -> None:
    assert r_precision(["x", "y", "z"], {"a", "b"}) == 0.0
    # top-2 = [b, a] = G -> 2/2.
    assert r_precision(["b", "a", "x"], {"a", "b"}) == 1.0


def test_r_precision_artist_partial_credit() -> None:
    artist_of = {"a": "A1", "b": "A2", "c": "A2", "d": "A3", "e": "A2", "f": "A2", "g": "A1"}
    recommended = ["a", "e", "f", "g", "b", "c", "d"]
    relevant = ["a", "b", "c", "d"]
    # R = 4; top-4 = [a, e, f, g]; track hits = {a} -> 1.
    # Relevant tracks not hit: b, c, d -> their artists {A2, A3}.
    # Non-hit recommended in top-4: e (A2), f (A2), g (A1) -> distinct artists {A2, A1}.
    # {A2, A1} & {A2, A3} = {A2} -> 1 artist hit (e and f share it; g's A1 only belongs to
    # the already-hit a, so it earns nothing).
    # (1 + 0.25 * 1) / 4 = 0.3125
    assert r_precision(recommended, relevant, artist_of=artist_of) == pytest.approx(0.3125)
    # Without the artist map: 1 / 4.
    assert r_precision(recommended, relevant) == pytest.approx(0.25)


def test_r_precision_artist_credit_only() -> None:
    artist_of = {"a": "A1", "b": "A2", "x": "A1", "y": "A2", "z": "A9"}
    # R = 2; top-2 = [x, y]: no track hit; artists {A1, A2} both belong to missed tracks
    # -> (0 + 0.25 * 2) / 2 = 0.25. z is outside the top-2.
    assert r_precision(["x", "y", "z"], ["a", "b"], artist_of=artist_of) == pytest.approx(0.25)
    # Tracks missing from the map earn no credit: top-2 = [q, y] -> 0.25 * 1 / 2 = 0.125.
    assert r_precision(["q", "y"], ["a", "b"], artist_of=artist_of) == pytest.approx(0.125)


# --- NDCG ----------------------------------------------------------------------------------


def test_ndcg_hand_computed() -> None:
    # Hits at 1-based ranks 2 and 4: DCG = 1/log2(3) + 1/log2(5) = 0.630930 + 0.430677
    # = 1.061606. IDCG (2 relevant) = 1/log2(2) + 1/log2(3) = 1.630930. NDCG = 0.650921.
    expected = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    assert ndcg(["x", "a", "y", "b"], {"a", "b"}) == pytest.approx(expected)
    assert expected == pytest.approx(0.650921, abs=1e-6)


def test_ndcg_all_hits_no_hits_and_cutoff() -> None:
    assert ndcg(["a", "b", "x"], {"a", "b"}) == pytest.approx(1.0)
    assert ndcg(["x", "y"], {"a"}) == 0.0
    # a at 1-based rank 3 lies beyond k = 2 -> 0.
    assert ndcg(["x", "y", "a"], {"a"}, k=2) == 0.0
    # IDCG over min(|G|, k) = min(3, 1) = 1 ideal hit: DCG = 1, IDCG = 1 -> 1.
    assert ndcg(["a"], {"a", "b", "c"}, k=1) == pytest.approx(1.0)


# --- Clicks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rank", "expected"),
    [(0, 0.0), (9, 0.0), (10, 1.0), (499, 49.0)],  # floor(rank / 10)
)
def test_clicks_at_ranks(rank: int, expected: float) -> None:
    assert clicks(_ranked(500, {rank: "a"}), {"a", "zz"}) == expected


def test_clicks_none_in_top_500() -> None:
    assert clicks(_ranked(500, {}), {"a"}) == CLICKS_NONE == 51
    # At 0-based rank 500 the track is the 501st: outside the top 500 -> 51.
    assert clicks(_ranked(501, {500: "a"}), {"a"}) == 51
    # First relevant counts, not the best: ranks 25 and 3 -> floor(3 / 10) = 0.
    assert clicks(_ranked(500, {25: "b", 3: "a"}), {"a", "b"}) == 0.0


# --- Recall --------------------------------------------------------------------------------


def test_recall_cutoffs() -> None:
    # Relevant a, b, c, d at 0-based ranks 0, 10, 60, and d missing.
    rec = _ranked(500, {0: "a", 10: "b", 60: "c"})
    rel = {"a", "b", "c", "d"}
    assert recall_at(rec, rel, 10) == pytest.approx(1 / 4)  # ranks 0..9: a
    assert recall_at(rec, rel, 11) == pytest.approx(2 / 4)  # ranks 0..10: a, b
    assert recall_at(rec, rel, 50) == pytest.approx(2 / 4)
    assert recall_at(rec, rel, 500) == pytest.approx(3 / 4)


# --- Duplicates and validation -------------------------------------------------------------


def test_duplicates_count_once_at_first_rank() -> None:
    rec = ["a", "a", "b"]
    rel = ["a", "b", "b"]  # relevant de-duplicated: G = {a, b}, R = 2
    # The second "a" keeps its slot but is no hit.
    # NDCG: DCG = 1/log2(2) + 0 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) = 1.630930 -> 0.919721.
    assert ndcg(rec, rel) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    # Recall@2: top-2 = [a, a] -> 1 of 2.
    assert recall_at(rec, rel, 2) == pytest.approx(0.5)
    # R-precision: top-2 = [a, a] -> 1 / 2.
    assert r_precision(rec, rel) == pytest.approx(0.5)
    metrics = case_metrics(rec, rel)
    assert metrics["recall@10"] == pytest.approx(1.0)
    assert metrics["ndcg"] == pytest.approx(0.919721, abs=1e-6)


@pytest.mark.parametrize(
    "call",
    [
        lambda: r_precision(["a"], []),
        lambda: ndcg(["a"], set()),
        lambda: clicks(["a"], []),
        lambda: recall_at(["a"], [], 10),
        lambda: case_metrics(["a"], []),
    ],
)
def test_empty_relevant_raises(call) -> None:
    with pytest.raises(ValueError, match=r"relevant .* is empty"):
        call()


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        recall_at(["a"], ["a"], 0)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        ndcg(["a"], ["a"], k=-3)
    with pytest.raises(ValueError, match="recommended must be a sequence"):
        ndcg("abc", ["a"])
    with pytest.raises(ValueError, match="relevant must be a collection"):
        r_precision(["a"], "a")


# --- case_metrics --------------------------------------------------------------------------


def test_case_metrics_matches_single_functions() -> None:
    rng = np.random.default_rng(0)
    universe = [f"t{i}" for i in range(2000)]
    artist_of = {t: f"A{i % 97}" for i, t in enumerate(universe)}
    for _ in range(20):
        rec = list(rng.choice(universe, size=500, replace=True))  # with repeats
        rel = list(rng.choice(universe, size=int(rng.integers(1, 80)), replace=False))
        m = case_metrics(rec, rel, artist_of=artist_of)
        assert tuple(m) == METRIC_NAMES
        assert m["r_precision"] == pytest.approx(r_precision(rec, rel, artist_of=artist_of))
        assert m["ndcg"] == pytest.approx(ndcg(rec, rel))
        assert m["clicks"] == clicks(rec, rel)
        for k in (10, 50, 500):
            assert m[f"recall@{k}"] == pytest.approx(recall_at(rec, rel, k))


def test_case_metrics_short_and_empty_lists() -> None:
    m = case_metrics([], {"a"})
    assert m == {
        "r_precision": 0.0,
        "ndcg": 0.0,
        "clicks": 51.0,
        "recall@10": 0.0,
        "recall@50": 0.0,
        "recall@500": 0.0,
    }
    # 3 recommendations, hit at 1-based rank 2: recall is 1/2 at every cut-off.
    m = case_metrics(["x", "a", "y"], {"a", "b"})
    assert m["recall@10"] == m["recall@500"] == pytest.approx(0.5)
    assert m["clicks"] == 0.0


def test_case_metrics_accepts_numpy_ids() -> None:
    rec = np.arange(500)
    m = case_metrics(rec, [3, 499, 10_000])
    # 0-based ranks 3 and 499 -> clicks 0, recall@10 = 1/3, recall@500 = 2/3.
    assert m["clicks"] == 0.0
    assert m["recall@10"] == pytest.approx(1 / 3)
    assert m["recall@500"] == pytest.approx(2 / 3)


# --- MetricAccumulator ---------------------------------------------------------------------


def test_accumulator_groups_and_means() -> None:
    acc = MetricAccumulator()
    acc.add(["all", "cat1"], {"ndcg": 0.5, "clicks": 2.0})
    acc.add(["all", "cat2"], {"ndcg": 1.0, "clicks": 0.0})
    acc.add("cat1", {"ndcg": 0.0, "clicks": 4.0})  # a bare string is one group
    acc.add(["cat2", "cat2"], {"ndcg": 0.0, "clicks": 1.0})  # repeated key counts once
    s = acc.summary()
    assert list(s) == ["all", "cat1", "cat2"]
    # all: ndcg (0.5 + 1.0) / 2 = 0.75, clicks (2 + 0) / 2 = 1.
    assert s["all"] == {"ndcg": 0.75, "clicks": 1.0, "cases": 2}
    # cat1: ndcg (0.5 + 0.0) / 2 = 0.25, clicks (2 + 4) / 2 = 3.
    assert s["cat1"] == {"ndcg": 0.25, "clicks": 3.0, "cases": 2}
    # cat2: ndcg (1.0 + 0.0) / 2 = 0.5, clicks (0 + 1) / 2 = 0.5.
    assert s["cat2"] == {"ndcg": 0.5, "clicks": 0.5, "cases": 2}


def test_accumulator_with_case_metrics() -> None:
    acc = MetricAccumulator()
    acc.add(["all"], case_metrics(["a", "x"], {"a"}))  # everything perfect, clicks 0
    acc.add(["all"], case_metrics(["x", "y"], {"a"}))  # nothing found, clicks 51
    s = acc.summary()["all"]
    assert s["cases"] == 2
    assert s["recall@500"] == pytest.approx(0.5)
    assert s["clicks"] == pytest.approx(25.5)


def test_accumulator_rejects_bad_input() -> None:
    acc = MetricAccumulator()
    acc.add(["all"], {"ndcg": 0.5})
    with pytest.raises(ValueError, match="same"):
        acc.add(["all"], {"ndcg": 0.5, "clicks": 1.0})
    with pytest.raises(ValueError, match="reserved"):
        acc.add(["x"], {"cases": 1.0})
    with pytest.raises(ValueError, match="finite"):
        acc.add(["x"], {"ndcg": float("nan")})
    with pytest.raises(ValueError, match="group_keys is empty"):
        acc.add([], {"ndcg": 0.5})
    assert acc.summary() == {"all": {"ndcg": 0.5, "cases": 1}}
