"""`llarapp feedback export`: fresh playlists and negatives, every event exactly once, crashes
included (the export's steps run one by one, as a crash would leave them)."""

from __future__ import annotations

import fcntl
import json

import pyarrow.parquet as pq
import pytest

from llarapp.cli import main
from llarapp.data.ingest import ingest
from llarapp.serving import feedback
from llarapp.serving.request import parse_feedback
from llarapp.serving.store import EventStore


def uri(i: int) -> str:
    return f"spotify:track:{i:022d}"


@pytest.fixture
def setup(tmp_path):
    """(event store, its file, a model folder naming tracks 0..49, the export folder)."""
    import pyarrow as pa

    model = tmp_path / "model"
    model.mkdir()
    table = {"track_uri": [uri(i) for i in range(50)],
             "track_name": [f"song {i}" for i in range(50)],
             "artist_name": [f"band {i % 5}" for i in range(50)]}  # fmt: skip
    pq.write_table(pa.table(table), model / "track_names.parquet")
    db = tmp_path / "events.db"
    store = EventStore(db, sample_rate=0.0)
    yield store, db, model, tmp_path / "feedback"
    store.close()


def vote(store, track: int, liked: bool, request_id=None, playlist_id=None) -> int:
    body = {"track_uri": uri(track), "liked": liked}
    body |= {"request_id": request_id} if request_id else {"playlist_id": playlist_id}
    return store.record_feedback(parse_feedback(body))[0]


def batches(out) -> list[dict]:
    return [json.loads((d / "batch.json").read_text()) for d in sorted(out.glob("feedback-*"))]


def exported(out) -> tuple[list[int], list[str], list[int]]:
    """(feedback ids covered, liked URIs in fresh playlists, disliked feedback ids)."""
    ids, liked, disliked = [], [], []
    for d in sorted(out.glob("feedback-*")):
        b = json.loads((d / "batch.json").read_text())
        ids += range(b["first_id"], b["last_id"] + 1)
        (slice_file,) = d.glob("mpd.slice.*.json")
        for pl in json.loads(slice_file.read_text())["playlists"]:
            liked += [t["track_uri"] for t in pl["tracks"]]  # these tests send no seeds
        disliked += pq.read_table(d / "negatives.parquet")["feedback_id"].to_pylist()
    return ids, liked, disliked


def test_fresh_playlists_and_negatives_that_ingest_reads(setup, tmp_path):
    store, db, model, out = setup
    store.remember("r1", {"title": "summer", "seed_uris": [uri(1), uri(2)],
                          "model_version": "v1"})  # fmt: skip
    vote(store, 10, True, "r1")
    vote(store, 11, False, "r1")
    vote(store, 12, True, "r1")
    vote(store, 12, False, "r1")  # a like taken back: the latest event counts
    vote(store, 13, True, playlist_id="p7")  # no request context: untitled, no seeds
    vote(store, 99, True, playlist_id="p8")  # a track no model names: left out, counted
    summary = feedback.export_feedback(db, out, [model])
    assert summary | {"folder": None} == {
        "folder": None, "first_id": 1, "last_id": 6, "events": 6, "likes": 4, "dislikes": 2,
        "playlists": 2, "negatives": 2, "unnamed_tracks": 1,
    }  # fmt: skip
    folder = out / "feedback-000000000001-000000000006"
    playlists = json.loads((folder / "mpd.slice.1-6.json").read_text())["playlists"]
    assert [(p["pid"], p["name"], [t["track_uri"] for t in p["tracks"]]) for p in playlists] == [
        (feedback.FEEDBACK_PID_BASE + 1, "summer", [uri(1), uri(2), uri(10)]),
        (feedback.FEEDBACK_PID_BASE + 5, feedback.UNTITLED, [uri(13)]),
    ]
    negatives = pq.read_table(folder / "negatives.parquet").to_pylist()
    assert [(n["track_uri"], n["pid"], n["title"], n["seed_uris"], n["model_version"])
            for n in negatives] == [
        (uri(11), feedback.FEEDBACK_PID_BASE + 1, "summer", [uri(1), uri(2)], "v1"),
        (uri(12), feedback.FEEDBACK_PID_BASE + 1, "summer", [uri(1), uri(2)], "v1"),
    ]  # fmt: skip
    report = ingest(str(folder), tmp_path / "data")  # what `llarapp train --mpd` runs first
    assert (report.playlists_ok, report.interactions_ok, report.quarantine_records) == (2, 4, 0)


def test_ingest_with_feedback_adds_fresh_playlists_and_negatives(setup, tmp_path):
    store, db, model, out = setup
    store.remember("r1", {"title": "summer", "seed_uris": [uri(1)], "model_version": "v1"})
    vote(store, 10, True, "r1")
    vote(store, 11, False, "r1")
    feedback.export_feedback(db, out, [model])
    vote(store, 20, False, playlist_id="p2")  # a second batch: dislikes only
    feedback.export_feedback(db, out, [model])
    mpd = tmp_path / "mpd"
    mpd.mkdir()
    tracks = [{"track_uri": uri(i), "track_name": f"song {i}", "artist_name": "band"}
              for i in (1, 2, 3)]  # fmt: skip
    slice_doc = {"info": {}, "playlists": [{"name": "base", "pid": 0, "tracks": tracks}]}
    (mpd / "mpd.slice.0-0.json").write_text(json.dumps(slice_doc))
    report = ingest(str(mpd), tmp_path / "data", max_playlists=1, feedback=out)
    assert (report.feedback_batches, report.negatives, report.playlists_ok) == (2, 2, 2)
    pids = pq.read_table(tmp_path / "data" / "playlists.parquet")["pid"].to_pylist()
    assert sorted(pids) == [0, feedback.FEEDBACK_PID_BASE + 1]  # max_playlists spares feedback
    negatives = pq.read_table(tmp_path / "data" / "negatives.parquet").to_pylist()
    assert [(n["track_uri"], n["title"]) for n in negatives] == [
        (uri(11), "summer"),
        (uri(20), None),
    ]
    report = ingest(str(mpd), tmp_path / "data")  # again without: no stale negatives stay
    assert report.negatives == 0 and not (tmp_path / "data" / "negatives.parquet").exists()
    with pytest.raises(FileNotFoundError, match="feedback export --out"):
        ingest(str(mpd), tmp_path / "data2", feedback=tmp_path / "nowhere")


def test_exactly_once_across_exports(setup, capsys):
    store, db, model, out = setup
    first = [vote(store, i, i % 3 > 0, playlist_id=f"p{i % 4}") for i in range(10)]
    assert main(["feedback", "export", "--events", str(db), "--out", str(out),
                 "--model", str(model)]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["events"] == 10
    second = [vote(store, i, i % 3 > 0, playlist_id=f"q{i % 4}") for i in range(10, 17)]
    assert feedback.export_feedback(db, out, [model])["events"] == 7
    assert feedback.export_feedback(db, out, [model]) == {"folder": None, "events": 0}
    ids, liked, disliked = exported(out)
    assert ids == first + second
    assert sorted(liked) == sorted(uri(i) for i in range(17) if i % 3 > 0)
    assert sorted(disliked) == [j for i, j in enumerate(first + second) if i % 3 == 0]


def test_crash_after_the_rename_neither_drops_nor_doubles(setup):
    """Published, cutoff not yet advanced: the next export records that batch and goes on."""
    store, db, model, out = setup
    ids = [vote(store, i, True, playlist_id=f"p{i}") for i in range(4)]
    batch = feedback.begin(db, out)
    feedback.write(db, batch, feedback.track_names([model]))  # crash here: no commit
    ids += [vote(store, i, i % 2 == 0, playlist_id=f"p{i}") for i in range(4, 8)]
    summary = feedback.export_feedback(db, out, [model])
    assert (summary["first_id"], summary["last_id"]) == (5, 8)
    covered, liked, disliked = exported(out)
    assert covered == ids and len(batches(out)) == 2
    assert sorted(liked) == sorted([uri(i) for i in range(4)] + [uri(4), uri(6)])
    assert disliked == [6, 8]


def test_crash_before_the_rename_reads_the_events_again(setup):
    """Range recorded, folder half written: the next export drops both and redoes the range."""
    store, db, model, out = setup
    ids = [vote(store, i, True, playlist_id="p") for i in range(3)]
    batch = feedback.begin(db, out)
    batch.tmp.mkdir(parents=True)
    (batch.tmp / "batch.json").write_text("{")  # crash mid-write
    ids += [vote(store, 3, False, playlist_id="p")]
    summary = feedback.export_feedback(db, out, [model])
    assert (summary["first_id"], summary["last_id"], summary["events"]) == (1, 4, 4)
    assert not batch.tmp.exists() and [p.name for p in out.iterdir()] == [
        "feedback-000000000001-000000000004"
    ]
    covered, liked, disliked = exported(out)
    assert covered == ids and liked == [uri(0), uri(1), uri(2)] and disliked == [4]


def test_one_export_at_a_time_and_clear_errors(setup, tmp_path):
    store, db, model, out = setup
    vote(store, 1, True, playlist_id="p")
    with open(f"{db}.export.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another feedback export is running"):
            feedback.export_feedback(db, out, [model])
    with pytest.raises(FileNotFoundError, match="no event store"):
        feedback.export_feedback(tmp_path / "nope.db", out, [model])
    with pytest.raises(FileNotFoundError, match=r"track_names\.parquet: missing"):
        feedback.export_feedback(db, out, [tmp_path])
    assert feedback.export_feedback(db, out, [model])["events"] == 1  # nothing was consumed
