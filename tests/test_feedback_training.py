"""Feedback changes outcomes: simulated listeners dislike some tracks and like others; the
retrain from the champion (LoRA, feedback exported, ingested with the data) ranks the disliked
lower and the liked higher, for the requests that voted and for similar ones (same titles,
other seeds)."""

from __future__ import annotations

import dataclasses
import shutil
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
from tiny_model import TINY

from llarapp.data.dataset import Case, Track
from llarapp.data.ingest import ingest
from llarapp.models.base import Recommender
from llarapp.serving.feedback import export_feedback
from llarapp.serving.request import parse_feedback
from llarapp.serving.store import EventStore
from llarapp.training.llara import train_from_data

K = 200  # ranks read; a track not in the list counts as K


def _requests(data_dir, n: int, offset: int) -> list[tuple[str, list[str]]]:
    """(title, two seed URIs) of ``n`` playlists, the seeds from position ``offset``."""
    playlists = pq.read_table(data_dir / "playlists.parquet").to_pandas().set_index("pid")
    inter = pq.read_table(data_dir / "interactions.parquet").to_pandas()
    tracks = inter.sort_values(["pid", "pos"]).groupby("pid")["track_uri"].apply(list)
    pids = np.random.default_rng(0).permutation(playlists.index.to_numpy())[:n]
    return [(playlists.loc[p, "name"], tracks[p][offset : offset + 2]) for p in pids]


def _lists(model, requests) -> list[list[str]]:
    return [model.recommend(Case(t, tuple(Track("", "", u) for u in s)), k=K) for t, s in requests]


def _moves(before, after, tracks) -> tuple[float, float, float, float]:
    """(mean rank before, after, share ranked lower, share ranked higher) over each (request,
    track) where the track was in the first 30 before."""
    pairs = np.array(
        [
            (b.index(u), a.index(u) if u in a else K)
            for b, a in zip(before, after, strict=True)
            for u in tracks
            if u in b[:30]
        ]
    )
    return (
        *pairs.mean(axis=0),
        np.mean(pairs[:, 1] > pairs[:, 0]),
        np.mean(pairs[:, 1] < pairs[:, 0]),
    )


def _lifts(before, after, tracks) -> tuple[float, float, float, float]:
    """(mean rank before, after, tracks in the first 30 per request before, after) over every
    (request, track): a like should lift the track wherever it stood, not only where it was
    shown (those few pairs start high, and the other liked tracks crowd them)."""
    ranks = np.array(
        [
            (b.index(u) if u in b else K, a.index(u) if u in a else K)
            for b, a in zip(before, after, strict=True)
            for u in tracks
        ]
    )
    top = np.array(
        [
            (len(tracks & set(b[:30])), len(tracks & set(a[:30])))
            for b, a in zip(before, after, strict=True)
        ]
    )
    return (*ranks.mean(axis=0), *top.mean(axis=0))


def test_dislikes_rank_lower_and_likes_higher_after_the_retrain(tiny, tmp_path):
    data_dir, _, model_dir, _ = tiny
    champion = Recommender.load(model_dir)
    answered = _requests(data_dir, 30, 0)  # what the listeners were shown, and voted on
    similar = _requests(data_dir, 30, 2)  # the same titles, other seeds: never voted on
    shown = _lists(champion, answered)
    top = Counter(u for r in shown for u in r[:3])
    middle = Counter(u for r in shown for u in r[10:25])
    disliked = {u for u, _ in top.most_common(10)}
    liked = {u for u, _ in middle.most_common(12)} - disliked

    store = EventStore(tmp_path / "events.db", sample_rate=0.0)
    for i, ((title, seeds), answer) in enumerate(zip(answered, shown, strict=True)):
        store.remember(f"r{i}", {"title": title, "seed_uris": seeds, "model_version": "v1"})
        for u in answer[:30]:
            if u in disliked or u in liked:
                body = {"request_id": f"r{i}", "track_uri": u, "liked": u in liked}
                store.record_feedback(parse_feedback(body))
    store.close()
    summary = export_feedback(tmp_path / "events.db", tmp_path / "feedback", [model_dir])
    assert summary["dislikes"] >= 15 and summary["likes"] >= 30

    mpd = data_dir.parent / "mpd"  # the fixture's slices: the data the champion learned from
    report = ingest(str(mpd), tmp_path / "data", feedback=tmp_path / "feedback")
    assert report.negatives == summary["negatives"]
    config = dataclasses.replace(TINY, epochs=10)
    retrained = train_from_data(
        tmp_path / "data",
        tmp_path / "model",
        config,
        work_dir=tmp_path / "work",
        base_model=shutil.copytree(model_dir, tmp_path / "champion"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    assert retrained.report["feedback_cases"] >= 5
    after = Recommender.load(tmp_path / "model")

    for name, requests, before in (
        ("answered", answered, shown),
        ("similar", similar, _lists(champion, similar)),
    ):
        now = _lists(after, requests)
        d_before, d_after, d_lower, _ = _moves(before, now, disliked)
        s_before, s_after, _, s_higher = _moves(before, now, liked)
        l_before, l_after, top_before, top_after = _lifts(before, now, liked)
        print(f"{name}: disliked {d_before:.1f} -> {d_after:.1f} ({d_lower:.0%} lower); "
              f"liked {l_before:.1f} -> {l_after:.1f}, {top_before:.2f} -> {top_after:.2f} "
              f"in the first 30; liked where shown {s_before:.1f} -> {s_after:.1f} "
              f"({s_higher:.0%} higher)")  # fmt: skip
        assert d_after > d_before + 3 and d_lower > 0.5  # dislikes carry over to other seeds
        assert l_after < l_before - 5 and top_after > top_before  # and so do likes
        if name == "answered":  # where the listeners saw them, the liked rise too
            assert s_after < s_before and s_higher > 0.5
