"""One inference path: ``LlaraPP.recommend`` (what the benchmark and the gate score) and
``llarapp serve`` over HTTP (what users get) return the same tracks in the same order.

Cases come from every playlist of the tiny model's synthetic set, four ways each: the title
alone, the first seeds with their URIs, the same seeds by name only (matched to the catalogue
by track and artist), and seeds the catalogue has never seen (text and artist only).
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from llarapp.data.dataset import Case, Track
from llarapp.serving.client import post_json, start_server, stop_server, wait_ready
from llarapp.serving.request import request_body

pytestmark = [pytest.mark.slow, pytest.mark.integration]
K = 50


def _cases(data_dir) -> list[Case]:
    tracks = pq.read_table(data_dir / "tracks.parquet").to_pandas().set_index("track_uri")
    playlists = pq.read_table(data_dir / "playlists.parquet").to_pandas().set_index("pid")
    inter = pq.read_table(data_dir / "interactions.parquet").to_pandas()
    cases = []
    for pid, group in inter.sort_values(["pid", "pos"]).groupby("pid"):
        title = str(playlists.loc[pid, "name"])
        head = [(u, tracks.loc[u]) for u in group["track_uri"].head(3)]
        known = tuple(Track(r.track_name, r.artist_name, u) for u, r in head)
        by_name = tuple(Track(r.track_name, r.artist_name) for _, r in head)
        unseen = tuple(Track(f"{r.track_name} (never released)", r.artist_name) for _, r in head)
        cases += [Case(title), Case(title, known), Case(None, by_name), Case(title, unseen)]
    return cases


def test_recommend_and_the_http_server_answer_alike(tiny, tmp_path):
    data_dir, _, model_dir, _ = tiny
    from llarapp.models.base import Recommender

    model = Recommender.load(model_dir)
    cases = _cases(data_dir)
    assert len(cases) >= 200
    kinds = {"title only": 0, "known seeds": 0, "by name": 0, "unseen seeds": 0}
    proc, url = start_server(
        str(model_dir), None, "--events", str(tmp_path / "events.db"),
        log_file=tmp_path / "server.log",
    )  # fmt: skip
    try:
        wait_ready(url, proc)
        for i, case in enumerate(cases):
            status, out = post_json(url, "/v1/recommend", request_body(case, K))
            assert status == 200, out
            served = [t["track_uri"] for t in out["recommended_tracks"]]
            assert served == model.recommend(case, K), (i, case)
            kinds[list(kinds)[i % 4]] += 1
    finally:
        stop_server(proc)
    assert min(kinds.values()) >= 50
    # the by-name cases were matched to the catalogue, not embedded as unknown text
    by_name = model.encode(cases[2])
    assert len(by_name.seed_idx) == len(cases[2].seeds) and len(by_name.extra_seed_text) == 0
