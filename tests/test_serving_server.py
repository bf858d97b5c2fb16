"""The serving engine and the local KServe server on a tiny trained LLaRA++ (loopback only)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from llarapp.data.dataset import Case
from llarapp.serving.client import post_json, start_server, stop_server, wait_ready
from llarapp.serving.request import parse_recommend
from llarapp.serving.store import read_feedback

pytestmark = [pytest.mark.slow, pytest.mark.integration]
KSERVE_DIR = Path(__file__).resolve().parents[1] / "kserve"
SEED = '{"track_name": "a", "artist_name": "b"}'
TOO_MANY_SEEDS = ('{"name": "x", "tracks": [' + ",".join([SEED] * 101) + "]}").encode()


@pytest.fixture(scope="module")
def served(tiny, tmp_path_factory):
    """(model_dir copy (its track names saved with it), engine, a valid case with title and
    seeds)."""
    from llarapp.data.dataset import load_cases
    from llarapp.serving.engine import ServingEngine

    data_dir, split_dir, model_dir, _ = tiny
    copy = tmp_path_factory.mktemp("served") / "model"
    shutil.copytree(model_dir, copy)
    engine = ServingEngine.load(str(copy))
    cases = load_cases(data_dir, split_dir, "valid")
    case = next(ec.case for ec in cases if ec.case.title and len(ec.case.seeds) >= 2)
    return copy, engine, case


def _body(case, k=20, uris=True):
    tracks = [
        {"track_name": t.track_name, "artist_name": t.artist_name}
        | ({"track_uri": t.track_uri} if uris else {})
        for t in case.seeds
    ]
    return {"name": case.title, "tracks": tracks, "k": k}


# ---------------------------------------------------------------------------- engine
def test_engine_matches_the_model(served):
    _, engine, case = served
    out = engine.run(parse_recommend(_body(case, k=30)))
    got = [t["track_uri"] for t in out["recommended_tracks"]]
    assert got == engine.model.recommend(case, 30)
    assert all(t["track_name"] and t["artist_name"] for t in out["recommended_tracks"])
    scores = [t["score"] for t in out["recommended_tracks"]]
    assert scores == sorted(scores, reverse=True)


def test_unknown_seeds_are_text_only_ranker_tokens_in_the_model_and_the_graph(served):
    import dataclasses

    from llarapp.data.dataset import Track

    _, engine, case = served
    new = Track("A Song Nobody Has Heard", "Someone New", "spotify:track:never-seen")
    mixed = dataclasses.replace(case, seeds=(*case.seeds[:5], new))
    model = engine.model
    cands = model.candidates(mixed)
    assert cands.rank_seed_text.shape == (1, model.stage.catalog.text.shape[1])
    inputs = model.ranker_inputs([cands], full=True)
    n_known = len(cands.rank_seed_idx)
    assert inputs["seed_mask"][0].tolist() == [1.0] * (n_known + 1)
    assert inputs["seed_use_behavior"][0].tolist() == [1.0] * n_known + [0.0]  # text only
    np.testing.assert_allclose(
        inputs["seed_text"][0, -1], model.encoder.encode([new.text])[0], atol=1e-4
    )
    alone = dataclasses.replace(cands, rank_seed_text=None)  # the token is read
    assert not np.array_equal(model.ranker_scores(cands), model.ranker_scores(alone))
    out = engine.run(parse_recommend(_body(mixed, k=30)))  # encode -> retrieve -> rank payloads
    assert [t["track_uri"] for t in out["recommended_tracks"]] == model.recommend(mixed, 30)


def test_engine_ranker_inputs_match_the_training_batcher(served):
    _, engine, case = served
    payload = engine.retrieve(engine.encode(parse_recommend(_body(case))))
    cands = engine.model.candidates(case)
    np.testing.assert_array_equal(payload["candidates"], cands.candidates)
    np.testing.assert_array_equal(payload["rank_seed_idx"], cands.rank_seed_idx)
    ours = engine.model.ranker_inputs([cands], full=True)
    from llarapp.training.llara import LlaraTrainConfig, RankCase, RankerBatcher

    batcher = RankerBatcher(engine.stage, LlaraTrainConfig.from_dict(engine.model.config))
    rc = RankCase(
        cands.query.title_vec,
        cands.rank_seed_idx,
        cands.candidates,
        cands.features,
        np.zeros(0, np.int64),
        np.zeros((2, 1)),
        np.ones(2),
        cands.query,
        cands.rank_seed_text,
    )
    ref = batcher.batch([rc], engine.model.hybrid)
    for name, value in ours.items():
        np.testing.assert_allclose(value, ref[name].numpy(), atol=1e-6, err_msg=name)
    served = engine.model.ranker_inputs([cands])  # candidate tokens -> vectors
    assert "cand_text" not in served
    want = engine.model.ranker.candidate_vectors(
        ref["cand_text"], ref["cand_behavior"], ref["cand_use_behavior"]
    )
    np.testing.assert_allclose(served["cand_vectors"], want.detach().numpy()[:1], atol=1e-5)


def test_engine_scores_match_the_ranker_forward(served):
    _, engine, case = served
    assert engine.ranker_backend == "torch"
    import torch

    for body in (_body(case), {"name": "summer"}):
        cands = engine.model.candidates(
            Case(body.get("name"), case.seeds if "tracks" in body else ())
        )
        with torch.inference_mode():
            inputs = engine.model.ranker_inputs([cands], full=True)
            forward = engine.model.ranker(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        np.testing.assert_allclose(engine.score(cands), forward.scores[0].numpy(), atol=1e-4)


def test_engine_name_only_seed_is_matched_and_excluded(served):
    _, engine, case = served
    seed = case.seeds[0]
    body = {"tracks": [{"track_name": seed.track_name, "artist_name": seed.artist_name}], "k": 50}
    payload = engine.encode(parse_recommend(body))
    assert engine.uris[payload["seed_idx"][0]] == seed.track_uri
    out = engine.rank(engine.retrieve(payload))
    assert seed.track_uri not in {t["track_uri"] for t in out["recommended_tracks"]}


def test_engine_unknown_seed_by_a_known_artist_brings_that_artists_tracks(served):
    from llarapp.models.retriever import FEATURES
    from llarapp.serving.request import RequestError

    _, engine, case = served
    artist = case.seeds[0].artist_name
    body = {"tracks": [{"track_name": "A Song Nobody Has Heard", "artist_name": artist}]}
    payload = engine.encode(parse_recommend(body))
    code = engine.stage.artist_code(artist)
    assert len(payload["seed_idx"]) == 0 and payload["seed_artists"].tolist() == [code] != [-1]
    got = engine.retrieve(payload)
    credited = got["candidates"][got["features"][:, FEATURES.index("artist_score")] > 0]
    by_artist = np.flatnonzero(engine.stage.retriever.artist_codes[: engine.stage.n_warm] == code)
    assert len(credited) and set(credited.tolist()) <= set(by_artist.tolist())
    for bad in ([code, code], [10**6]):
        with pytest.raises(RequestError, match="seed_artists"):
            engine.retrieve({**payload, "seed_artists": bad})
    payload.pop("seed_artists")  # a payload from an older encoder: artist unknown, still served
    assert len(engine.retrieve(payload)["candidates"]) == len(got["candidates"])


def test_engine_title_naming_an_artist_brings_that_artists_tracks(served):
    from llarapp.models.retriever import FEATURES
    from llarapp.serving.request import RequestError

    _, engine, case = served
    artist = case.seeds[0].artist_name
    payload = engine.encode(parse_recommend({"name": f" {artist.upper()} ", "k": 10}))
    code = engine.stage.artist_code(artist)
    assert payload["title_artists"].tolist() == [code] != [-1]
    got = engine.retrieve(payload)
    credited = got["candidates"][got["features"][:, FEATURES.index("artist_score")] > 0]
    by_artist = np.flatnonzero(engine.stage.retriever.artist_codes[: engine.stage.n_warm] == code)
    assert len(credited) and set(credited.tolist()) <= set(by_artist.tolist())
    for bad in ([-1], [10**6]):
        with pytest.raises(RequestError, match="title_artists"):
            engine.retrieve({**payload, "title_artists": bad})
    payload.pop("title_artists")  # a payload from an older encoder: no artist named, served
    assert len(engine.retrieve(payload)["candidates"]) == len(got["candidates"])


def test_step_models_predict_directly(served):
    """The kserve models' handlers, awaited directly (v1 JSON and v2 tensors)."""
    sys.path.insert(0, str(KSERVE_DIR))
    from kserve.protocol.infer_type import InferInput, InferRequest

    from llarapp_kserve.common import PayloadError
    from llarapp_kserve.encoder.model import EncoderModel
    from llarapp_kserve.ranker.model import RankerModel
    from llarapp_kserve.retriever.model import RetrieverModel

    _, engine, case = served
    enc, ret, rank = (cls(n, core=engine) for cls, n in ((EncoderModel, "encoder"),
                      (RetrieverModel, "retriever"), (RankerModel, "ranker")))  # fmt: skip
    for m in (enc, ret, rank):
        assert m.load() and m.ready
    out = asyncio.run(enc.predict(_body(case, k=5)))
    out = asyncio.run(ret.predict(out))
    out = asyncio.run(rank.predict(out))
    assert len(out["recommended_tracks"]) == 5
    with pytest.raises(PayloadError, match="k="):
        asyncio.run(enc.predict({"name": "x", "k": -1}))
    text = InferInput("text", [1], "BYTES", ["summer"])
    resp = asyncio.run(enc.predict(InferRequest("encoder", [text])))
    assert resp.outputs[0].name == "embedding" and resp.outputs[0].shape == [1, engine.text_dim]
    names = InferInput("artist_name", [2], "BYTES", [case.seeds[0].artist_name, "Nobody Yet"])
    resp = asyncio.run(enc.predict(InferRequest("encoder", [names])))
    codes = resp.outputs[0].as_numpy().tolist()
    assert codes == [engine.stage.artist_code(case.seeds[0].artist_name), -1] and codes[0] >= 0
    title = InferInput("title", [1], "BYTES", [case.seeds[0].artist_name])
    resp = asyncio.run(enc.predict(InferRequest("encoder", [title])))
    assert resp.outputs[0].name == "title_artists"
    assert resp.outputs[0].as_numpy().tolist() == [codes[0]]
    with pytest.raises(PayloadError, match="'title' holds 2"):
        asyncio.run(
            enc.predict(InferRequest("encoder", [InferInput("title", [2], "BYTES", ["a", "b"])]))
        )


# ---------------------------------------------------------------------------- server
@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    model_dir, _, _ = served
    work = tmp_path_factory.mktemp("server")
    proc, url = start_server(
        str(model_dir), None, "--events", str(work / "events.db"), "--sample-rate", "1.0",
        log_file=work / "server.log",
    )  # fmt: skip
    try:
        wait_ready(url, proc)
        yield proc, url, work
    finally:
        stop_server(proc)


def _alive(url):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/v2/health/ready")
    return conn.getresponse().status == 200


def test_graph_route_end_to_end(server, served):
    _, url, _ = server
    _, engine, case = served
    status, out = post_json(url, "/v1/recommend", _body(case, k=25))
    assert status == 200, out
    got = [t["track_uri"] for t in out["recommended_tracks"]]
    assert got == engine.model.recommend(case, 25)
    assert out["model_version"] == engine.model_version and out["request_id"]
    assert not {t.track_uri for t in case.seeds} & set(got)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "summer road trip"},  # title only
        {"name": "gym", "tracks": []},  # empty tracks
        {"tracks": [{"track_name": "No Such Song", "artist_name": "Nobody At All"}], "k": 10},
        {
            "name": "mix",
            "tracks": [{"track_name": "Unknown", "artist_name": "X", "track_uri": "spotify:x"}],
            "k": 500,  # more than the retriever's candidates: popularity fills the rest
        },
    ],
)
def test_title_only_and_unknown_tracks(server, body):
    _, url, _ = server
    status, out = post_json(url, "/v1/recommend", body)
    assert status == 200, out
    tracks = out["recommended_tracks"]
    assert len(tracks) == body.get("k", 50)
    assert len({t["track_uri"] for t in tracks}) == len(tracks)
    assert all(isinstance(t["score"], float) for t in tracks)


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/recommend", b"{not json", 400),
        ("/v1/recommend", b'{"name": "\xff\xfe"}', 400),
        ("/v1/recommend", b'{"name": "x", "k": 0}', 422),
        ("/v1/recommend", b'{"name": "x", "k": 5000}', 422),
        ("/v1/recommend", b'{"name": 3}', 422),
        ("/v1/recommend", b'{"tracks": [{"track_name": "a"}]}', 422),
        ("/v1/recommend", b'{"name": "x", "tracks": "abc"}', 422),
        ("/v1/recommend", b"[1, 2]", 422),
        ("/v1/recommend", b'{"name": "x", "extra": 1}', 422),
        ("/v1/recommend", TOO_MANY_SEEDS, 422),
        ("/v1/recommend", b'{"name": "' + b"a" * 70_000 + b'"}', 413),
        ("/v1/feedback", b'{"track_uri": "x", "liked": true}', 422),
        ("/v1/feedback", b'{"request_id": "r", "track_uri": "x", "liked": 1}', 422),
        ("/v1/feedback", b"\xff", 400),
        ("/v1/canary", b'{"percent": 5}', 409),  # one model: no challenger to split with
        ("/v1/models/encoder:predict", b'{"name": "x", "k": -3}', 400),
        ("/v1/models/ranker:predict", b'{"candidates": [1, 2], "features": [[0.1]]}', 400),
        ("/v1/models/retriever:predict", b'{"seed_idx": [999999999]}', 400),
    ],
)
def test_bad_input_is_4xx_and_server_keeps_serving(server, path, body, status):
    _, url, _ = server
    got, out = post_json(url, path, body)
    assert got == status, out
    assert out.get("error"), out
    assert _alive(url)


def test_v2_infer_routes(server):
    _, url, _ = server
    v2 = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}
    status, out = post_json(url, "/v2/models/encoder/infer", v2)
    assert status == 200 and out["outputs"][0]["shape"] == [2, 384]
    v2 = {"inputs": [{"name": "seed_idx", "shape": [2], "datatype": "INT64", "data": [0, 1]}]}
    status, out = post_json(url, "/v2/models/retriever/infer", v2)
    assert status == 200
    outs = {o["name"]: o for o in out["outputs"]}
    n, f = outs["features"]["shape"]
    v2 = {
        "inputs": [
            {"name": "candidates", "shape": [n], "datatype": "INT64",
             "data": outs["candidates"]["data"]},
            {"name": "features", "shape": [n, f], "datatype": "FP32",
             "data": outs["features"]["data"]},
        ],
        "parameters": {"k": 5},
    }  # fmt: skip
    status, out = post_json(url, "/v2/models/ranker/infer", v2)
    assert status == 200, out
    assert {o["name"]: o["shape"] for o in out["outputs"]} == {"track_index": [5], "score": [5]}


def test_metrics_per_model_and_step(server):
    _, url, _ = server
    post_json(url, "/v1/recommend", {"name": "metrics"})
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    for model, step in (("encoder", "encode"), ("retriever", "retrieve"), ("ranker", "rank")):
        assert f'llarapp_step_seconds_count{{model="{model}",step="{step}"}}' in text
    assert 'llarapp_requests_total{code="200",route="/v1/recommend"}' in text


def test_feedback_is_stored_with_request_context(server, served):
    _, url, work = server
    _, _, case = served
    status, out = post_json(url, "/v1/recommend", _body(case, k=5))
    rid, uri = out["request_id"], out["recommended_tracks"][0]["track_uri"]
    status, ack = post_json(url, "/v1/feedback", {"request_id": rid, "track_uri": uri,
                                                 "liked": False})  # fmt: skip
    assert status == 200 and ack["stored"]
    row = next(r for r in read_feedback(work / "events.db") if r["id"] == ack["id"])
    assert (
        row["liked"] == 0
        and row["title"] == case.title
        and case.seeds[0].track_uri in row["seed_uris"]
    )


def test_zz_sigterm_drains_in_flight_requests(server, served):
    """Last test of the module: SIGTERM while requests are in flight; each still gets its 200."""
    proc, url, _ = server
    _, _, case = served
    results = []
    body = _body(case, k=500)

    def call():
        try:
            results.append(post_json(url, "/v1/recommend", body)[0])
        except OSError:  # arrived after the listener closed: refused, never half-answered
            results.append(None)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert proc.wait(60) == 0
    # requests that reached the server before SIGTERM were answered; later ones were refused
    assert all(s == 200 for s in results if s is not None)


def test_feedback_survives_kill_9(served, tmp_path):
    model_dir, _, _ = served
    db = tmp_path / "events.db"
    proc, url = start_server(
        str(model_dir), None, "--events", str(db), log_file=tmp_path / "server.log"
    )
    try:
        wait_ready(url, proc)
        acks = []
        for i in range(3):
            status, ack = post_json(
                url, "/v1/feedback", {"playlist_id": f"p{i}", "track_uri": f"u{i}",
                                      "liked": i % 2 == 0},
            )  # fmt: skip
            assert status == 200
            acks.append(ack["id"])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = read_feedback(db)
    assert [r["id"] for r in rows] == acks
    assert [r["liked"] for r in rows] == [1, 0, 1]


def _private_and_resident_mib(pid: int) -> tuple[float, float]:
    """(USS, RSS) of a process in MiB, from /proc/PID/smaps_rollup."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    kib = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
    return (kib["Private_Clean"] + kib["Private_Dirty"]) / 1024, kib["Rss"] / 1024


def test_workers_share_the_port_and_stop_together(served, tmp_path):
    """--workers 2: the supervisor loads the model once and forks two processes that share its
    memory and answer on one port; feedback finds the context of a request whichever served it,
    and SIGTERM stops both (the supervisor exits 0)."""
    model_dir, _, case = served
    db, log = tmp_path / "events.db", tmp_path / "server.log"
    proc, url = start_server(
        str(model_dir), None, "--events", str(db), "--workers", "2", log_file=log
    )
    try:
        wait_ready(url, proc)
        ids = []
        for _ in range(20):  # a new connection each: the kernel spreads them over the workers
            status, out = post_json(url, "/v1/recommend", _body(case, k=5))
            assert status == 200
            ids.append(out["request_id"])
        for rid in ids:
            status, _ = post_json(url, "/v1/feedback", {"request_id": rid, "track_uri": "u",
                                                        "liked": False})  # fmt: skip
            assert status == 200
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2
        loaded = _private_and_resident_mib(proc.pid)[1]
        for child in children:  # the runtime and the model stay shared: little is private
            assert _private_and_resident_mib(int(child))[0] < 0.25 * loaded
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    workers = {e["pid"] for e in lines if e.get("event") == "serving"}
    served_by = {e["pid"] for e in lines if e.get("event") == "recommend"}
    assert len(workers) == 2 and served_by == workers
    loaded_by = {e["pid"] for e in lines if "ready (model" in e.get("msg", "")}
    assert loaded_by == {proc.pid}  # loaded once, before the fork
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    rows = read_feedback(db)
    assert len(rows) == 20 and all(r["title"] == case.title for r in rows)


def test_serving_benchmark_json(served, tiny, tmp_path):
    """`llarapp benchmark serving` on the tiny model: the JSON the issue names, no errors."""
    from llarapp.benchmark.serving import format_table, run_serving_benchmark

    model_dir, _, _ = served
    data_dir = tiny[0]
    out = tmp_path / "serving.json"
    result = run_serving_benchmark(
        model_dir, str(data_dir.parent / "mpd"), out, requests=20, warmup=5, seeds=2, k=50
    )
    on_disk = json.loads(out.read_text())
    assert on_disk == result
    for level in ("c1", "c8"):
        row = result[level]
        assert set(row) >= {"p50_ms", "p95_ms", "p99_ms", "rps", "errors"}
        assert row["errors"] == 0 and row["requests"] == 20 and row["rps"] > 0
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert result["floor_ms"] > 0 and result["catalog_size"] == len(served[1].uris)
    assert (result["workers"], result["ranker"]) == (2, "torch")  # served: no ONNX export
    assert "| 8 |" in format_table(result)
    assert Path(result["chart"]).read_bytes()[:4] == b"\x89PNG"  # the latency histogram
