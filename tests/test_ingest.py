"""Tests for llarapp.data.ingest: MPD slice validation, quarantine and the output tables.

Every test writes its own small slice files into ``tmp_path``; no real data is read.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from llarapp.data import ingest as ingest_mod
from llarapp.data import schema
from llarapp.data.ingest import (
    IngestLimits,
    IngestReport,
    NoSourceFilesError,
    ingest,
    iter_sources,
)

ALPHABET = string.digits + string.ascii_letters


def tid(i: int) -> str:
    """A valid, deterministic spotify track URI for track number ``i``."""
    digits = []
    n = i
    for _ in range(22):
        n, r = divmod(n, 62)
        digits.append(ALPHABET[r])
    return "spotify:track:" + "".join(reversed(digits))


def full_track(i: int, pos: int) -> dict[str, Any]:
    return {
        "pos": pos,
        "artist_name": f"Artist {i % 7}",
        "track_uri": tid(i),
        "artist_uri": f"spotify:artist:{'a' * 21}{i % 7}",
        "track_name": f"Track {i}",
        "album_uri": f"spotify:album:{'b' * 21}{i % 5}",
        "duration_ms": 180_000 + i,
        "album_name": f"Album {i % 5}",
    }


def reduced_track(i: int) -> dict[str, Any]:
    return {"artist_name": f"Artist {i % 7}", "track_uri": tid(i), "track_name": f"Track {i}"}


def full_playlist(pid: int, track_ids: list[int], **extra: Any) -> dict[str, Any]:
    tracks = [full_track(i, pos) for pos, i in enumerate(track_ids)]
    pl = {
        "name": f"Playlist {pid}",
        "collaborative": "false" if pid % 2 else "true",
        "pid": pid,
        "modified_at": 1_500_000_000 + pid,
        "num_tracks": len(tracks),
        "num_albums": 3,
        "num_followers": pid % 4 + 1,
        "tracks": tracks,
        "num_edits": 2,
        "duration_ms": sum(t["duration_ms"] for t in tracks),
        "num_artists": 3,
    }
    pl.update(extra)
    return pl


def reduced_playlist(pid: int, track_ids: list[int], **extra: Any) -> dict[str, Any]:
    pl = {
        "name": f"Playlist {pid}",
        "pid": pid,
        "num_tracks": len(track_ids),
        "num_followers": 10 + pid,
        "tracks": [reduced_track(i) for i in track_ids],
    }
    pl.update(extra)
    return pl


def slice_text(playlists: list[Any], start: int = 0) -> str:
    doc = {
        "info": {"generated_on": "2017-12-03", "slice": f"{start}-{start + 999}", "version": "v1"},
        "playlists": playlists,
    }
    return json.dumps(doc, ensure_ascii=False)


def write_slice(folder: Path, playlists: list[Any], start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"mpd.slice.{start}-{start + 999}.json"
    path.write_text(slice_text(playlists, start), encoding="utf-8")
    return path


def tables(out: Path) -> dict[str, Any]:
    return {
        "playlists": pq.read_table(out / schema.PLAYLISTS_FILE),
        "tracks": pq.read_table(out / schema.TRACKS_FILE),
        "interactions": pq.read_table(out / schema.INTERACTIONS_FILE),
    }


def rows(out: Path) -> set[tuple[int, int, str]]:
    t = pq.read_table(out / schema.INTERACTIONS_FILE).to_pylist()
    return {(r["pid"], r["pos"], r["track_uri"]) for r in t}


def pids(out: Path) -> set[int]:
    return set(pq.read_table(out / schema.PLAYLISTS_FILE).column("pid").to_pylist())


def quarantine(out: Path) -> list[dict[str, Any]]:
    text = (out / schema.QUARANTINE_FILE).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def expected_rows(pid: int, track_ids: list[int]) -> set[tuple[int, int, str]]:
    return {(pid, pos, tid(i)) for pos, i in enumerate(track_ids)}


def check_invariants(report: IngestReport, out: Path) -> None:
    assert report.playlists_in == report.playlists_ok + report.playlists_quarantined
    assert report.tracks_in == (
        report.interactions_ok + report.tracks_quarantined + report.tracks_dropped_with_playlist
    )
    t = tables(out)
    assert t["playlists"].num_rows == report.playlists_ok
    assert t["interactions"].num_rows == report.interactions_ok
    assert t["tracks"].num_rows == report.distinct_tracks
    assert len(quarantine(out)) == report.quarantine_records == sum(report.reasons.values())
    assert t["playlists"].schema.equals(schema.PLAYLISTS)
    assert t["tracks"].schema.equals(schema.TRACKS)
    assert t["interactions"].schema.equals(schema.INTERACTIONS)
    # pos is contiguous and 0-based per playlist, and num_tracks counts it.
    by_pid: dict[int, list[int]] = {}
    for r in t["interactions"].to_pylist():
        by_pid.setdefault(r["pid"], []).append(r["pos"])
    num_tracks = dict(
        zip(
            t["playlists"].column("pid").to_pylist(),
            t["playlists"].column("num_tracks").to_pylist(),
            strict=True,
        )
    )
    for pid, positions in by_pid.items():
        assert sorted(positions) == list(range(len(positions)))
        assert num_tracks[pid] == len(positions)
    assert set(by_pid) == set(num_tracks)
    files = {p.name for p in out.iterdir()}
    assert not [name for name in files if ".tmp" in name]


# ----------------------------------------------------------------------------- clean input


def test_clean_full_slice(tmp_path: Path) -> None:
    playlists = [
        full_playlist(0, [0, 1, 2, 3, 4]),
        full_playlist(1, [2, 5, 6], description="road trip"),
        full_playlist(2, [7, 0, 8, 9]),
    ]
    src = write_slice(tmp_path / "src", playlists)
    out = tmp_path / "out"
    report = ingest(tmp_path / "src", out)

    assert report.files_read == 1
    assert report.playlists_in == report.playlists_ok == 3
    assert report.playlists_quarantined == 0
    assert report.tracks_in == report.interactions_ok == 12
    assert report.tracks_quarantined == report.duplicate_tracks_dropped == 0
    assert report.distinct_tracks == 10
    assert report.reasons == {}
    check_invariants(report, out)

    t = tables(out)
    assert rows(out) == (
        expected_rows(0, [0, 1, 2, 3, 4])
        | expected_rows(1, [2, 5, 6])
        | expected_rows(2, [7, 0, 8, 9])
    )
    pl = {r["pid"]: r for r in t["playlists"].to_pylist()}
    assert pl[0] == {
        "pid": 0,
        "name": "Playlist 0",
        "description": None,
        "num_tracks": 5,
        "num_followers": 1,
        "num_edits": 2,
        "modified_at": 1_500_000_000,
        "collaborative": True,
        "duration_ms": playlists[0]["duration_ms"],
        "source": src.name,
    }
    assert pl[1]["collaborative"] is False
    assert pl[1]["description"] == "road trip"
    tracks = {r["track_uri"]: r for r in t["tracks"].to_pylist()}
    assert tracks[tid(3)] == {
        "track_uri": tid(3),
        "track_name": "Track 3",
        "artist_name": "Artist 3",
        "album_name": "Album 3",
        "artist_uri": f"spotify:artist:{'a' * 21}3",
        "album_uri": f"spotify:album:{'b' * 21}3",
        "duration_ms": 180_003,
    }
    assert (out / schema.QUARANTINE_FILE).read_text() == ""
    saved = json.loads((out / schema.INGEST_REPORT_FILE).read_text())
    assert saved["peak_rss_mb"] > 0
    assert saved["interactions_ok"] == 12
    assert saved == report.to_dict()


def test_clean_reduced_slice(tmp_path: Path) -> None:
    playlists = [reduced_playlist(10, [1, 2, 3]), reduced_playlist(11, [3, 4])]
    write_slice(tmp_path / "src", playlists)
    out = tmp_path / "out"
    report = ingest(tmp_path / "src", out)

    assert (report.playlists_ok, report.interactions_ok, report.distinct_tracks) == (2, 5, 4)
    assert report.quarantine_records == 0
    check_invariants(report, out)
    assert rows(out) == expected_rows(10, [1, 2, 3]) | expected_rows(11, [3, 4])
    t = tables(out)
    p = t["playlists"].to_pylist()[0]
    assert p["num_followers"] == 20
    assert p["modified_at"] is None
    assert p["collaborative"] is None
    assert p["num_edits"] is None
    assert p["description"] is None
    tr = t["tracks"].to_pylist()[0]
    assert tr["album_name"] is None and tr["duration_ms"] is None and tr["album_uri"] is None


def test_pos_decides_order_and_first_spelling_wins(tmp_path: Path) -> None:
    pl = full_playlist(5, [10, 11, 12])
    pl["tracks"] = [pl["tracks"][2], pl["tracks"][0], pl["tracks"][1]]  # list order != pos
    later = reduced_playlist(6, [10])
    later["tracks"][0]["track_name"] = "Another spelling"
    write_slice(tmp_path / "src", [pl, later])
    out = tmp_path / "out"
    report = ingest(tmp_path / "src", out)
    check_invariants(report, out)
    assert rows(out) == expected_rows(5, [10, 11, 12]) | expected_rows(6, [10])
    names = {r["track_uri"]: r["track_name"] for r in tables(out)["tracks"].to_pylist()}
    assert names[tid(10)] == "Track 10"


# ----------------------------------------------------------------------------- defects

GOOD_A = [1, 2, 3]
GOOD_B = [4, 5]


def _good_neighbours() -> list[dict[str, Any]]:
    return [full_playlist(100, GOOD_A), reduced_playlist(101, GOOD_B)]


def _set(d: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    if value is _DELETE:
        d.pop(key)
    else:
        d[key] = value
    return d


_DELETE = object()

PLAYLIST_DEFECTS = [
    ("pid_missing", "pid", _DELETE, "missing_field"),
    ("pid_str", "pid", "7", "wrong_type"),
    ("pid_bool", "pid", True, "wrong_type"),
    ("pid_float", "pid", 7.0, "wrong_type"),
    ("pid_negative", "pid", -7, "negative_value"),
    ("name_missing", "name", _DELETE, "missing_field"),
    ("name_empty", "name", "  ", "missing_field"),
    ("name_wrong_type", "name", 42, "wrong_type"),
    ("name_too_long", "name", "x" * 1001, "text_too_long"),
    ("description_too_long", "description", "d" * 1001, "text_too_long"),
    ("description_wrong_type", "description", ["x"], "wrong_type"),
    ("followers_str", "num_followers", "10", "wrong_type"),
    ("followers_negative", "num_followers", -1, "negative_value"),
    ("edits_bool", "num_edits", False, "wrong_type"),
    ("modified_negative", "modified_at", -5, "negative_value"),
    ("collaborative_bad", "collaborative", "maybe", "wrong_type"),
    ("tracks_missing", "tracks", _DELETE, "missing_field"),
    ("tracks_not_list", "tracks", {"0": 1}, "wrong_type"),
    ("tracks_empty", "tracks", [], "empty_playlist"),
]


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [case[1:] for case in PLAYLIST_DEFECTS],
    ids=[case[0] for case in PLAYLIST_DEFECTS],
)
def test_playlist_defect_quarantines_only_that_playlist(
    tmp_path: Path, key: str, value: Any, kind: str
) -> None:
    bad = _set(full_playlist(7, [7, 8]), key, value)
    a, b = _good_neighbours()
    src = write_slice(tmp_path / "src", [a, bad, b])
    out = tmp_path / "out"
    report = ingest(src, out)

    check_invariants(report, out)
    assert pids(out) == {100, 101}
    assert rows(out) == expected_rows(100, GOOD_A) | expected_rows(101, GOOD_B)
    [entry] = quarantine(out)
    assert entry["level"] == "playlist"
    assert entry["kind"] == kind
    assert entry["source"] == str(src)
    # the quarantine keeps an int pid as given (even a negative one), null otherwise
    expected_pid = 7 if key != "pid" else (value if type(value) is int else None)
    assert entry["pid"] == expected_pid
    assert entry["track_index"] is None
    assert "playlists[1]" in entry["reason"] and src.name in entry["reason"]
    assert report.reasons == {kind: 1}
    assert report.playlists_quarantined == 1
    assert len(entry["record"]) <= 510
    if isinstance(bad.get("tracks"), list):
        assert report.tracks_dropped_with_playlist == len(bad["tracks"])


def test_playlist_not_an_object(tmp_path: Path) -> None:
    a, b = _good_neighbours()
    src = write_slice(tmp_path / "src", [a, "oops", 3, b])
    report = ingest(src, tmp_path / "out")
    check_invariants(report, tmp_path / "out")
    assert pids(tmp_path / "out") == {100, 101}
    entries = quarantine(tmp_path / "out")
    assert [(e["level"], e["kind"], e["pid"]) for e in entries] == [
        ("playlist", "wrong_type", None),
        ("playlist", "wrong_type", None),
    ]
    assert "expected an object" in entries[0]["reason"]
    assert report.playlists_in == 4


def test_too_many_tracks_uses_limit(tmp_path: Path) -> None:
    a, b = _good_neighbours()
    big = reduced_playlist(7, list(range(10, 16)))
    src = write_slice(tmp_path / "src", [a, big, b])
    out = tmp_path / "out"
    report = ingest(src, out, limits=IngestLimits(max_tracks_per_playlist=5))
    check_invariants(report, out)
    assert pids(out) == {100, 101}
    [entry] = quarantine(out)
    assert (entry["kind"], entry["pid"]) == ("too_many_tracks", 7)
    assert "6 entries" in entry["reason"] and "at most 5" in entry["reason"]
    assert report.limits == {"max_tracks_per_playlist": 5, "max_text_length": 1000}


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_text_length"):
        IngestLimits(max_text_length=0)


TRACK_DEFECTS = [
    ("uri_short", "track_uri", "spotify:track:abc", "bad_track_uri"),
    ("uri_album", "track_uri", "spotify:album:" + "a" * 22, "bad_track_uri"),
    ("uri_newline", "track_uri", tid(8) + "\n", "bad_track_uri"),
    ("uri_bad_char", "track_uri", "spotify:track:" + "a" * 21 + "!", "bad_track_uri"),
    ("uri_missing", "track_uri", _DELETE, "missing_field"),
    ("uri_wrong_type", "track_uri", 12, "wrong_type"),
    ("name_missing", "track_name", _DELETE, "missing_field"),
    ("name_empty", "track_name", "", "missing_field"),
    ("name_null", "track_name", None, "missing_field"),
    ("artist_wrong_type", "artist_name", ["x"], "wrong_type"),
    ("artist_too_long", "artist_name", "y" * 1001, "text_too_long"),
    ("album_too_long", "album_name", "z" * 1001, "text_too_long"),
    ("album_wrong_type", "album_name", 3, "wrong_type"),
    ("duration_negative", "duration_ms", -1, "negative_value"),
    ("duration_str", "duration_ms", "100", "wrong_type"),
    ("pos_str", "pos", "1", "wrong_type"),
    ("pos_negative", "pos", -1, "negative_value"),
]


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [case[1:] for case in TRACK_DEFECTS],
    ids=[case[0] for case in TRACK_DEFECTS],
)
def test_track_defect_quarantines_only_that_track(
    tmp_path: Path, key: str, value: Any, kind: str
) -> None:
    pl = full_playlist(7, [7, 8, 9])
    _set(pl["tracks"][1], key, value)
    a, b = _good_neighbours()
    src = write_slice(tmp_path / "src", [a, pl, b])
    out = tmp_path / "out"
    report = ingest(src, out)

    check_invariants(report, out)
    assert pids(out) == {7, 100, 101}
    assert rows(out) == (
        expected_rows(100, GOOD_A) | expected_rows(101, GOOD_B) | expected_rows(7, [7, 9])
    )
    [entry] = quarantine(out)
    assert (entry["level"], entry["kind"], entry["pid"], entry["track_index"]) == (
        "track",
        kind,
        7,
        1,
    )
    assert "pid 7" in entry["reason"] and "track 1" in entry["reason"]
    assert report.tracks_quarantined == 1 and report.duplicate_tracks_dropped == 0
    assert report.reasons == {kind: 1}


def test_lone_surrogate_text_is_quarantined(tmp_path: Path) -> None:
    pl = reduced_playlist(7, [7, 8])
    pl["tracks"][0]["track_name"] = "SURROGATE"
    bad_name = reduced_playlist(9, [9])
    bad_name["name"] = "SURROGATE"
    src = tmp_path / "mpd.slice.0-999.json"
    # json.dumps cannot write a lone surrogate; put the JSON escape in by hand.
    src.write_text(slice_text([pl, bad_name]).replace("SURROGATE", "bad \\udc80 text"))
    out = tmp_path / "out"
    report = ingest(src, out)
    check_invariants(report, out)
    assert rows(out) == expected_rows(7, [8])
    entries = quarantine(out)  # the quarantine itself stays valid UTF-8 JSON
    assert [(e["kind"], e["pid"], e["track_index"]) for e in entries] == [
        ("bad_text", 7, 0),
        ("bad_text", 9, None),
    ]
    assert "\udc80" in entries[0]["record"]


def test_track_not_an_object(tmp_path: Path) -> None:
    pl = reduced_playlist(7, [7, 8])
    pl["tracks"].insert(1, "spotify:track:" + "a" * 22)
    src = write_slice(tmp_path / "src", [pl])
    report = ingest(src, tmp_path / "out")
    check_invariants(report, tmp_path / "out")
    assert rows(tmp_path / "out") == expected_rows(7, [7, 8])
    [entry] = quarantine(tmp_path / "out")
    assert (entry["kind"], entry["track_index"]) == ("wrong_type", 1)


def test_playlist_with_no_valid_track_is_quarantined(tmp_path: Path) -> None:
    pl = reduced_playlist(7, [7, 8])
    for t in pl["tracks"]:
        t["track_uri"] = "spotify:local:whatever"
    a, b = _good_neighbours()
    src = write_slice(tmp_path / "src", [a, pl, b])
    out = tmp_path / "out"
    report = ingest(src, out)
    check_invariants(report, out)
    assert pids(out) == {100, 101}
    entries = quarantine(out)
    assert [(e["level"], e["kind"], e["track_index"]) for e in entries] == [
        ("track", "bad_track_uri", 0),
        ("track", "bad_track_uri", 1),
        ("playlist", "empty_playlist", None),
    ]
    assert report.reasons == {"bad_track_uri": 2, "empty_playlist": 1}
    assert report.playlists_quarantined == 1
    assert report.tracks_quarantined == 2


def test_duplicate_tracks_dropped_and_pos_contiguous(tmp_path: Path) -> None:
    pl = reduced_playlist(7, [1, 2, 1, 3, 2, 2, 4])
    src = write_slice(tmp_path / "src", [pl])
    out = tmp_path / "out"
    report = ingest(src, out)
    check_invariants(report, out)
    assert rows(out) == expected_rows(7, [1, 2, 3, 4])
    entries = quarantine(out)
    assert [(e["kind"], e["track_index"]) for e in entries] == [
        ("duplicate_track", 2),
        ("duplicate_track", 4),
        ("duplicate_track", 5),
    ]
    assert "repeats track 0" in entries[0]["reason"]
    assert report.duplicate_tracks_dropped == report.tracks_quarantined == 3
    assert report.interactions_ok == 4
    assert report.reasons == {"duplicate_track": 3}
    assert tables(out)["playlists"].column("num_tracks").to_pylist() == [4]


def test_duplicate_first_by_pos(tmp_path: Path) -> None:
    pl = full_playlist(7, [1, 2, 1])
    pl["tracks"] = list(reversed(pl["tracks"]))  # list index 0 holds pos 2
    src = write_slice(tmp_path / "src", [pl])
    out = tmp_path / "out"
    ingest(src, out)
    assert rows(out) == expected_rows(7, [1, 2])
    [entry] = quarantine(out)
    assert (entry["kind"], entry["track_index"]) == ("duplicate_track", 0)


def test_duplicate_pid_across_files(tmp_path: Path) -> None:
    first = write_slice(tmp_path / "src", [reduced_playlist(1, [1, 2])], start=0)
    dup = reduced_playlist(1, [3])
    dup["name"] = "impostor"
    second = write_slice(tmp_path / "src", [dup, reduced_playlist(2, [4])], start=1000)
    out = tmp_path / "out"
    report = ingest(tmp_path / "src", out)
    check_invariants(report, out)
    assert rows(out) == expected_rows(1, [1, 2]) | expected_rows(2, [4])
    pl = {r["pid"]: r for r in tables(out)["playlists"].to_pylist()}
    assert pl[1]["name"] == "Playlist 1" and pl[1]["source"] == first.name
    [entry] = quarantine(out)
    assert (entry["kind"], entry["pid"], entry["source"]) == ("duplicate_pid", 1, str(second))
    assert report.reasons == {"duplicate_pid": 1}
    assert report.tracks_dropped_with_playlist == 1


def test_invalid_playlist_does_not_claim_its_pid(tmp_path: Path) -> None:
    bad = reduced_playlist(1, [1])
    bad["name"] = ""
    src = write_slice(tmp_path / "src", [bad, reduced_playlist(1, [2])])
    ingest(src, tmp_path / "out")
    assert rows(tmp_path / "out") == expected_rows(1, [2])


# ----------------------------------------------------------------------------- file defects


def test_truncated_file_salvages_complete_playlists(tmp_path: Path) -> None:
    playlists = [
        reduced_playlist(1, [1, 2], name="Été 🎵 mix"),
        reduced_playlist(2, [3]),
        reduced_playlist(3, [4, 5]),
        reduced_playlist(4, [6]),
    ]
    text = slice_text(playlists)
    third = json.dumps(playlists[2], ensure_ascii=False)
    cut_char = text.index(third)
    expected_byte = len(text[:cut_char].encode("utf-8"))
    src = tmp_path / "src"
    src.mkdir()
    broken = src / "mpd.slice.0-999.json"
    broken.write_bytes(text[: cut_char + len(third) // 2].encode("utf-8"))
    write_slice(src, [reduced_playlist(5, [7])], start=1000)
    out = tmp_path / "out"
    report = ingest(src, out)

    check_invariants(report, out)
    assert pids(out) == {1, 2, 5}
    assert rows(out) == expected_rows(1, [1, 2]) | expected_rows(2, [3]) | expected_rows(5, [7])
    names = tables(out)["playlists"].column("name").to_pylist()
    assert "Été 🎵 mix" in names
    [entry] = quarantine(out)
    assert (entry["level"], entry["kind"], entry["pid"]) == ("file", "truncated_file", None)
    assert entry["source"] == str(broken)
    assert f"truncated at byte {expected_byte}" in entry["reason"]
    assert entry["record"].startswith('{"name": "Playlist 3"')
    assert report.files_quarantined == 1
    assert report.files_read == 2
    assert report.reasons == {"truncated_file": 1}


def test_truncated_after_playlists_array_keeps_everything(tmp_path: Path) -> None:
    text = slice_text([reduced_playlist(1, [1]), reduced_playlist(2, [2])])
    src = tmp_path / "mpd.slice.0-999.json"
    src.write_text(text[:-1])  # drop the closing brace
    out = tmp_path / "out"
    report = ingest(src, out)
    assert pids(out) == {1, 2}
    [entry] = quarantine(out)
    assert entry["kind"] == "truncated_file" and "after the playlists array" in entry["reason"]
    assert report.playlists_ok == 2


@pytest.mark.parametrize(
    ("content", "kind", "needle"),
    [
        (b"hello, not json", "not_json", "not valid JSON"),
        (b"", "not_json", "not valid JSON"),
        (b'{"info": {"slice": "0-9', "not_json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not_json", "not UTF-8"),
        (b"[1, 2, 3]", "wrong_type", "top-level JSON value is array"),
        (b'{"info": {}}', "missing_field", "no 'playlists' field"),
        (b'{"playlists": {"a": 1}}', "wrong_type", "'playlists' is object"),
    ],
    ids=["text", "empty", "cut_before_playlists", "binary", "list", "no_playlists", "dict"],
)
def test_bad_file_is_quarantined_and_others_survive(
    tmp_path: Path, content: bytes, kind: str, needle: str
) -> None:
    src = tmp_path / "src"
    write_slice(src, [reduced_playlist(1, [1, 2])], start=0)
    bad = src / "mpd.slice.1000-1999.json"
    bad.write_bytes(content)
    write_slice(src, [reduced_playlist(2, [3])], start=2000)
    out = tmp_path / "out"
    report = ingest(src, out)
    check_invariants(report, out)
    assert rows(out) == expected_rows(1, [1, 2]) | expected_rows(2, [3])
    [entry] = quarantine(out)
    assert (entry["level"], entry["kind"], entry["source"]) == ("file", kind, str(bad))
    assert needle in entry["reason"]
    assert report.files_read == 3 and report.files_quarantined == 1


# ----------------------------------------------------------------------------- sources


def test_sources_folder_sorted_numerically(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for start in (10000, 2000, 0, 1000):
        write_slice(src, [reduced_playlist(start, [start])], start=start)
    (src / "notes.txt").write_text("ignored")
    (src / "other.json").write_text("{}")
    names = [Path(p).name for p in iter_sources(str(src))]
    assert names == [
        "mpd.slice.0-999.json",
        "mpd.slice.1000-1999.json",
        "mpd.slice.2000-2999.json",
        "mpd.slice.10000-10999.json",
    ]
    out = tmp_path / "out"
    report = ingest(src, out)
    assert report.files_read == 4
    assert tables(out)["playlists"].column("pid").to_pylist() == [0, 1000, 2000, 10000]


def test_sources_glob_and_single_file(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for start in (0, 1000, 2000):
        write_slice(src, [reduced_playlist(start, [start])], start=start)
    pattern = str(src / "mpd.slice.[12]*.json")
    assert [Path(p).name for p in iter_sources(pattern)] == [
        "mpd.slice.1000-1999.json",
        "mpd.slice.2000-2999.json",
    ]
    out = tmp_path / "out"
    ingest(pattern, out)
    assert pids(out) == {1000, 2000}
    single = str(src / "mpd.slice.0-999.json")
    assert iter_sources(single) == [single]
    ingest(single, out)
    assert pids(out) == {0}
    recursive = iter_sources(str(tmp_path / "**" / "mpd.slice.*.json"))
    assert len(recursive) == 3


def test_folder_without_slice_names_uses_json_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "b.json").write_text(slice_text([reduced_playlist(2, [2])]))
    (src / "a.json").write_text(slice_text([reduced_playlist(1, [1])]))
    assert [Path(p).name for p in iter_sources(str(src))] == ["a.json", "b.json"]


@pytest.mark.parametrize("kind", ["empty_folder", "missing_path", "glob_no_match"])
def test_empty_source_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no slices here")
    source = {
        "empty_folder": str(tmp_path / "empty"),
        "missing_path": str(tmp_path / "nope"),
        "glob_no_match": str(tmp_path / "empty" / "mpd.slice.*.json"),
    }[kind]
    with pytest.raises(NoSourceFilesError, match="ingest source") as info:
        ingest(source, tmp_path / "out")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, ValueError)
    assert source in str(info.value)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- run control


def test_max_playlists_stops_early(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_slice(src, [reduced_playlist(i, [i]) for i in range(3)], start=0)
    write_slice(src, [reduced_playlist(i, [i]) for i in range(3, 6)], start=1000)
    out = tmp_path / "out"
    report = ingest(src, out, max_playlists=4)
    assert report.playlists_ok == 4
    assert report.stopped_early
    assert pids(out) == {0, 1, 2, 3}
    check_invariants(report, out)
    with pytest.raises(ValueError, match="max_playlists"):
        ingest(src, out, max_playlists=0)


def test_failed_ingest_leaves_no_complete_looking_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    write_slice(src, [reduced_playlist(1, [1])], start=0)
    write_slice(src, [reduced_playlist(2, [2])], start=1000)
    out = tmp_path / "out"
    ingest(src, out)
    assert (out / schema.INGEST_REPORT_FILE).exists()

    real_read = ingest_mod.read_source

    def flaky(name: str, client: Any) -> bytes:
        if name.endswith("1000-1999.json"):
            raise OSError("disk on fire")
        return real_read(name, client)

    monkeypatch.setattr(ingest_mod, "read_source", flaky)
    with pytest.raises(OSError, match="disk on fire"):
        ingest(src, out)
    names = sorted(p.name for p in out.iterdir())
    assert schema.INGEST_REPORT_FILE not in names  # no report: the run is not complete
    assert not [n for n in names if ".tmp" in n]  # no half-written tables left behind


def test_report_is_json_with_all_counts(tmp_path: Path) -> None:
    src = write_slice(tmp_path / "src", [reduced_playlist(1, [1, 1])])
    out = tmp_path / "out"
    ingest(src, out)
    saved = json.loads((out / schema.INGEST_REPORT_FILE).read_text())
    for key in (
        "files_read",
        "playlists_in",
        "playlists_ok",
        "playlists_quarantined",
        "tracks_in",
        "interactions_ok",
        "tracks_quarantined",
        "duplicate_tracks_dropped",
        "distinct_tracks",
        "reasons",
        "seconds",
        "peak_rss_mb",
    ):
        assert key in saved
    assert saved["reasons"] == {"duplicate_track": 1}
    assert saved["peak_rss_mb"] > 0
    assert saved["seconds"] >= 0
