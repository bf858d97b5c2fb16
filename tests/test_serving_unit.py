"""Serving without a model: request checks, the graph manifest, the manifests, the event store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from llarapp.serving.graph import read_sequence
from llarapp.serving.request import (
    Limits,
    RequestError,
    decode_json,
    parse_feedback,
    parse_recommend,
)
from llarapp.serving.store import EventStore, read_feedback

GRAPH = Path(__file__).resolve().parents[1] / "manifests" / "base" / "inference-graph.yaml"


# ---------------------------------------------------------------------------- requests
def test_parse_recommend_shapes():
    r = parse_recommend(
        {
            "name": "  summer ",
            "tracks": [
                {"track_name": "A", "artist_name": "B", "track_uri": "spotify:track:1"},
                {"track_name": "C", "artist_name": "D", "pos": 3},  # MPD extras are ignored
            ],
            "k": 7,
        }
    )
    assert r.name == "summer" and r.k == 7 and len(r.tracks) == 2
    assert r.tracks[0].track_uri == "spotify:track:1" and r.tracks[1].track_uri is None
    assert parse_recommend({"name": "x"}).k == Limits().default_k
    assert parse_recommend({"name": "x", "tracks": []}).tracks == ()
    assert parse_recommend({"tracks": [{"track_name": "a", "artist_name": "b"}]}).name is None


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{bad", 400, "not valid JSON"),
        (b"\xff\xfe{}", 400, "not UTF-8"),
        (b"", 400, "empty"),
        (b"x" * (Limits().max_body_bytes + 1), 413, "limit"),
        (b"[]", 422, "JSON object"),
        (b'{"name": 5}', 422, "name: expected a string"),
        (b'{"name": "x", "k": 0}', 422, "k=0"),
        (b'{"name": "x", "k": 100000}', 422, "k=100000"),
        (b'{"name": "x", "k": "5"}', 422, "k: expected an integer"),
        (b'{"name": "x", "k": true}', 422, "k: expected an integer"),
        (b'{"name": "x", "tracks": {}}', 422, "tracks: expected a list"),
        (b'{"name": "x", "tracks": [5]}', 422, "tracks[0]: expected an object"),
        (b'{"tracks": [{"track_name": "a"}]}', 422, "missing field(s) ['artist_name']"),
        (b'{"tracks": [{"track_name": "a", "artist_name": ""}]}', 422, "must not be empty"),
        (b'{"name": "x", "tracks": [{"track_name": "a", "artist_name": 1}]}', 422, "string"),
        (b'{"name": "x", "colour": 1}', 422, "unknown field(s) ['colour']"),
        (b'{"name": "   "}', 422, "nothing to recommend from"),
        (b"{}", 422, "nothing to recommend from"),
    ],
)
def test_bad_requests_say_what_is_wrong(body, status, says):
    with pytest.raises(RequestError) as err:
        parse_recommend(decode_json(body))
    assert err.value.status == status
    assert says in err.value.message


def test_too_many_seeds():
    tracks = [{"track_name": "a", "artist_name": "b"}] * (Limits().max_seeds + 1)
    with pytest.raises(RequestError, match="seed tracks; the limit is"):
        parse_recommend({"name": "x", "tracks": tracks})


def test_parse_feedback():
    ev = parse_feedback({"request_id": "r1", "track_uri": "u", "liked": False})
    assert (ev.request_id, ev.track_uri, ev.liked) == ("r1", "u", False)
    assert parse_feedback({"playlist_id": 12, "track_uri": "u", "liked": True}).playlist_id == "12"
    for bad, says in [
        ({"track_uri": "u", "liked": True}, "request_id"),
        ({"request_id": "r", "liked": True}, "track_uri"),
        ({"request_id": "r", "track_uri": "u", "liked": "yes"}, "true or false"),
        ({"request_id": "r", "track_uri": "u", "liked": True, "x": 1}, "unknown"),
    ]:
        with pytest.raises(RequestError, match=says):
            parse_feedback(bad)


# ---------------------------------------------------------------------------- graph
def test_graph_sequence_from_manifest():
    steps = read_sequence(GRAPH)
    assert [(s.name, s.service) for s in steps] == [
        ("encode", "encoder"),
        ("retrieve", "retriever"),
        ("rank", "ranker"),
    ]
    assert [s.data for s in steps] == ["$request", "$response", "$response"]


def test_graph_reader_rejects_soft_or_non_sequence(tmp_path):
    doc = yaml.safe_load(GRAPH.read_text())
    doc["spec"]["nodes"]["champion"]["steps"][1]["dependency"] = "Soft"
    (tmp_path / "soft.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="expected 'Hard'"):
        read_sequence(tmp_path / "soft.yaml")
    doc["spec"]["nodes"]["root"]["routerType"] = "Ensemble"
    (tmp_path / "ens.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="Sequence or Splitter"):
        read_sequence(tmp_path / "ens.yaml")


# ---------------------------------------------------------------------------- event store
def test_store_feedback_with_its_request_context(tmp_path):
    store = EventStore(tmp_path / "events.db", sample_rate=1.0)
    store.remember("r1", {"title": "summer", "seed_uris": ["s1", "s2"], "model_version": "v"})
    store.record_feedback(parse_feedback({"request_id": "r1", "track_uri": "a", "liked": True}))
    store.record_feedback(parse_feedback({"request_id": "r1", "track_uri": "b", "liked": False}))
    store.record_feedback(parse_feedback({"playlist_id": "p9", "track_uri": "c", "liked": False}))
    assert store.maybe_log_request({"request_id": "r1", "title": "summer", "k": 5})
    store.close()
    rows = read_feedback(tmp_path / "events.db")
    assert [r["track_uri"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["title"] == "summer" and json.loads(rows[0]["seed_uris"]) == ["s1", "s2"]
    assert [r["liked"] for r in rows] == [1, 0, 0]
    with sqlite3.connect(tmp_path / "events.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0] == 1
        assert conn.execute("SELECT title FROM contexts").fetchall() == [("summer",)]


def test_feedback_finds_the_context_of_another_process(tmp_path):
    """Two stores on one file, as two server workers: feedback on a request the other served."""
    import time

    a, b = EventStore(tmp_path / "events.db", 0.0), EventStore(tmp_path / "events.db", 0.0)
    a.remember("r1", {"title": "road trip", "seed_uris": ["s1"], "model_version": "v1"})
    b.record_feedback(parse_feedback({"request_id": "r2", "track_uri": "x", "liked": True}))
    a.remember("r2", {"title": "late", "seed_uris": [], "model_version": "v1"})  # after it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # a's context reaches the file in the background
        with sqlite3.connect(tmp_path / "events.db") as conn:
            if conn.execute("SELECT COUNT(*) FROM contexts").fetchone()[0] == 2:
                break
        time.sleep(0.05)
    b.record_feedback(parse_feedback({"request_id": "r1", "track_uri": "y", "liked": False}))
    a.close()
    b.close()
    rows = {r["track_uri"]: r for r in read_feedback(tmp_path / "events.db")}
    assert rows["y"]["title"] == "road trip" and json.loads(rows["y"]["seed_uris"]) == ["s1"]
    assert rows["x"]["title"] == "late"  # filled from contexts when read


def test_model_uri_local_layouts(tmp_path):
    from llarapp.serving.model_uri import resolve_model_uri

    (tmp_path / "mnt" / "model").mkdir(parents=True)
    (tmp_path / "mnt" / "model" / "model.json").write_text(json.dumps({"name": "x"}))
    resolved = resolve_model_uri(str(tmp_path / "mnt"))
    assert resolved.path == tmp_path / "mnt" / "model" and resolved.version.startswith("sha1-")
    with pytest.raises(FileNotFoundError, match=r"no model\.json"):
        resolve_model_uri(str(tmp_path))
    with pytest.raises(ValueError, match="models:/NAME@ALIAS"):
        resolve_model_uri("models:/a/b/c")


@pytest.mark.slow
def test_model_uri_mlflow_alias(tmp_path, monkeypatch):
    import mlflow

    from llarapp.serving.model_uri import resolve_model_uri

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "model.json").write_text(json.dumps({"name": "x"}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_artifacts(str(folder), artifact_path="model")
    client = mlflow.MlflowClient()
    client.create_registered_model("llarapp")
    mv = client.create_model_version("llarapp", f"runs:/{run.info.run_id}", run.info.run_id)
    client.set_registered_model_alias("llarapp", "champion", mv.version)
    resolved = resolve_model_uri("models:/llarapp@champion", tmp_path / "cache")
    assert (resolved.path / "model.json").is_file() and resolved.path.name == "model"
    assert resolved.version == f"llarapp/{mv.version}"
