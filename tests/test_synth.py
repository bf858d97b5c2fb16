"""The synthetic MPD generator: file contract, determinism and statistical signal."""

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from llarapp.data import synth
from llarapp.data.synth import GENERIC_WORDS, generate

FULL_PLAYLIST_KEYS = [
    "name", "collaborative", "pid", "modified_at", "num_tracks", "num_albums",
    "num_followers", "tracks", "num_edits", "duration_ms", "num_artists",
]  # fmt: skip
REDUCED_PLAYLIST_KEYS = [
    "name", "pid", "num_tracks", "num_followers", "tracks", "num_edits", "duration_ms",
    "num_artists",
]  # fmt: skip
FULL_TRACK_KEYS = [
    "pos", "artist_name", "track_uri", "artist_uri", "track_name", "album_uri", "duration_ms",
    "album_name",
]  # fmt: skip
REDUCED_TRACK_KEYS = ["artist_name", "track_uri", "track_name"]
URI = {k: re.compile(rf"^spotify:{k}:[0-9A-Za-z]{{22}}$") for k in ("track", "artist", "album")}
WORD = re.compile(r"[a-z0-9&\-]+")


def _load(paths: list[Path]) -> list[dict]:
    playlists: list[dict] = []
    for path in paths:
        playlists.extend(json.loads(path.read_text(encoding="utf-8"))["playlists"])
    return playlists


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """800 playlists (full mode) for the statistical checks."""
    return _load(generate(800, tmp_path_factory.mktemp("big"), seed=7, playlists_per_slice=300))


def test_determinism_slice_naming_and_info(tmp_path: Path) -> None:
    a = generate(25, tmp_path / "a", seed=3, playlists_per_slice=10)
    b = generate(25, tmp_path / "b", seed=3, playlists_per_slice=10)
    c = generate(25, tmp_path / "c", seed=4, playlists_per_slice=10)
    # Same seed, same bytes; another seed, other content.
    for pa, pb in zip(a, b, strict=True):
        assert pa.read_bytes() == pb.read_bytes()
    assert all(pa.read_bytes() != pc.read_bytes() for pa, pc in zip(a, c, strict=True))
    # end = start + playlists_per_slice - 1, also for the last, partial slice (as MPD names it)
    names = ["mpd.slice.0-9.json", "mpd.slice.10-19.json", "mpd.slice.20-29.json"]
    assert [p.name for p in a] == [p.name for p in c] == names
    assert sorted((tmp_path / "a").iterdir()) == sorted(a)
    pids = []
    for path, start, count in zip(a, (0, 10, 20), (10, 10, 5), strict=True):
        data = json.loads(path.read_text(encoding="utf-8"))
        assert list(data) == ["info", "playlists"]
        assert set(data["info"]) == {"generated_on", "slice", "version"}
        assert data["info"]["slice"] == f"{start}-{start + 9}"
        assert len(data["playlists"]) == count
        pids += [p["pid"] for p in data["playlists"]]
    assert pids == list(range(25))


def test_full_schema_and_consistency(big: list[dict]) -> None:
    n_desc = 0
    for p in big:
        keys = list(p)
        if keys[-1] == "description":
            n_desc += 1
            assert isinstance(p["description"], str) and p["description"]
            keys = keys[:-1]
        assert keys == FULL_PLAYLIST_KEYS
        assert p["collaborative"] in ("false", "true")
        assert isinstance(p["name"], str) and p["name"].strip()
        for key in ("pid", "modified_at", "num_followers", "num_edits", "duration_ms"):
            assert isinstance(p[key], int) and p[key] >= 0
        assert 1262304000 <= p["modified_at"] <= 1509494400  # 2010-01-01 .. 2017-11-01
        assert p["modified_at"] % 86400 == 0
        tracks = p["tracks"]
        assert p["num_tracks"] == len(tracks)
        assert [t["pos"] for t in tracks] == list(range(len(tracks)))
        assert all(list(t) == FULL_TRACK_KEYS for t in tracks)
        assert all(t["track_name"] and t["artist_name"] and t["album_name"] for t in tracks)
        assert all(30_000 <= t["duration_ms"] <= 1_200_000 for t in tracks)
        assert p["num_artists"] == len({t["artist_uri"] for t in tracks})
        assert p["num_albums"] == len({t["album_uri"] for t in tracks})
        assert p["duration_ms"] == sum(t["duration_ms"] for t in tracks)
    assert 0.02 < n_desc / len(big) < 0.2
    for kind in ("track", "artist", "album"):
        uris = {t[f"{kind}_uri"] for p in big for t in p["tracks"]}
        assert all(URI[kind].match(u) for u in uris)


def test_reduced_schema_is_a_projection_of_full(tmp_path: Path) -> None:
    full_paths = generate(80, tmp_path / "full", seed=5)
    reduced_paths = generate(80, tmp_path / "red", seed=5, reduced=True)
    # Default: 1000 playlists per slice.
    assert [p.name for p in full_paths] == [p.name for p in reduced_paths]
    assert [p.name for p in full_paths] == ["mpd.slice.0-999.json"]
    full, reduced = _load(full_paths), _load(reduced_paths)
    assert len(reduced) == len(full) == 80
    for pr, pf in zip(reduced, full, strict=True):
        keys = list(pr)
        if keys[-1] == "description":
            assert pr["description"] == pf["description"]
            keys = keys[:-1]
        assert keys == REDUCED_PLAYLIST_KEYS
        for key in REDUCED_PLAYLIST_KEYS:
            if key != "tracks":
                assert pr[key] == pf[key]
        assert all(list(t) == REDUCED_TRACK_KEYS for t in pr["tracks"])
        assert pr["tracks"] == [{k: t[k] for k in REDUCED_TRACK_KEYS} for t in pf["tracks"]]


def test_track_ids_are_consistent_across_playlists(big: list[dict]) -> None:
    seen: dict[str, tuple] = {}
    for p in big:
        for t in p["tracks"]:
            meta = (t["track_name"], t["artist_uri"], t["artist_name"], t["album_uri"])
            assert seen.setdefault(t["track_uri"], meta) == meta


def test_lengths_like_mpd(big: list[dict]) -> None:
    lengths = np.array([p["num_tracks"] for p in big])
    assert lengths.min() >= 5 and lengths.max() <= 250
    assert 50 <= np.median(lengths) <= 90
    assert np.mean(lengths) > np.median(lengths)  # right-skewed
    assert (lengths < 20).mean() > 0.03 and (lengths > 150).mean() > 0.05


def test_popularity_is_long_tailed_and_some_tracks_appear_once(big: list[dict]) -> None:
    playlists_of = Counter(u for p in big for u in {t["track_uri"] for t in p["tracks"]})
    counts = np.array(sorted(playlists_of.values(), reverse=True))
    rows = sum(p["num_tracks"] for p in big)
    once = counts == 1
    assert once.mean() > 0.3  # many distinct tracks are seen in a single playlist
    assert 0.04 < once.sum() / rows < 0.3  # ... which are a modest share of the rows
    assert counts[0] > 20 * np.median(counts)  # a few hits
    assert counts[0] < 0.25 * len(big)


def test_a_few_playlists_repeat_a_track(big: list[dict]) -> None:
    dup = [p for p in big if len({t["track_uri"] for t in p["tracks"]}) < p["num_tracks"]]
    assert 0.01 < len(dup) / len(big) < 0.1


def test_artist_runs(big: list[dict]) -> None:
    same_next = [
        a["artist_uri"] == b["artist_uri"]
        for p in big
        for a, b in zip(p["tracks"], p["tracks"][1:], strict=False)
    ]
    assert np.mean(same_next) > 0.1


def _words(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


def test_titles_share_genre_words_with_their_tracks(big: list[dict]) -> None:
    generic = set(GENERIC_WORDS)
    titles = [_words(p["name"]) - generic for p in big]
    texts = [
        set().union(*(_words(f"{t['track_name']} {t['artist_name']}") for t in p["tracks"]))
        for p in big
    ]
    own = np.mean([bool(ti & tx) for ti, tx in zip(titles, texts, strict=True)])
    shifted = texts[1:] + texts[:1]  # another playlist's tracks, as a chance baseline
    chance = np.mean([bool(ti & tx) for ti, tx in zip(titles, shifted, strict=True)])
    assert own > 0.6
    assert own > 3 * chance
    # Not every title is informative: some are only generic words.
    assert 0.05 < np.mean([not t for t in titles]) < 0.4


def test_tracks_of_a_playlist_co_occur_elsewhere(big: list[dict]) -> None:
    # Behavioral signal: the second half of a playlist is found, far more often than a random
    # playlist's tracks, in other playlists that contain a track of its first half.
    posting: dict[str, set[int]] = {}
    for k, p in enumerate(big):
        for t in p["tracks"]:
            posting.setdefault(t["track_uri"], set()).add(k)
    rng = np.random.default_rng(0)
    own, rand = [], []
    for i in rng.choice(len(big), 200, replace=False).tolist():
        j = (i + 1 + int(rng.integers(len(big) - 1))) % len(big)
        tracks = [t["track_uri"] for t in big[i]["tracks"]]
        half = len(tracks) // 2
        neighbours = set().union(*(posting[u] for u in tracks[:half])) - {i, j}

        def hit_rate(uris: list[str], nb: set[int] = neighbours) -> float:
            return float(np.mean([bool(posting[u] & nb) for u in uris]))

        own.append(hit_rate(tracks[half:]))
        rand.append(hit_rate([t["track_uri"] for t in big[j]["tracks"]]))
    assert np.mean(own) > 1.5 * np.mean(rand)


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n_playlists must be >= 1"):
        generate(0, tmp_path)
    with pytest.raises(ValueError, match="playlists_per_slice must be >= 1"):
        generate(5, tmp_path, playlists_per_slice=0)


def test_chunked_generation_is_deterministic_and_seamless(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Parameters are drawn a chunk of whole slices at a time (250 -> 200 playlists here): three
    # chunks, each slice file well-formed, the same catalog on both sides of each boundary.
    monkeypatch.setattr(synth, "_CHUNK_PLAYLISTS", 250)
    a = generate(500, tmp_path / "a", seed=2, playlists_per_slice=100)
    b = generate(500, tmp_path / "b", seed=2, playlists_per_slice=100)
    assert [p.name for p in a] == [f"mpd.slice.{s}-{s + 99}.json" for s in range(0, 500, 100)]
    assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a, b, strict=True))
    playlists = _load(a)
    assert [p["pid"] for p in playlists] == list(range(500))
    meta: dict[str, tuple] = {}
    chunk_of: dict[str, set[int]] = {}
    for p in playlists:
        assert p["num_tracks"] == len(p["tracks"]) and 5 <= p["num_tracks"] <= 250
        assert [t["pos"] for t in p["tracks"]] == list(range(p["num_tracks"]))
        for t in p["tracks"]:
            m = (t["track_name"], t["artist_uri"], t["artist_name"], t["album_uri"])
            assert meta.setdefault(t["track_uri"], m) == m
            chunk_of.setdefault(t["track_uri"], set()).add(p["pid"] // 200)
    # Warm tracks recur across chunks; each chunk has its own one-off (cold) tracks.
    assert sum(len(c) == 3 for c in chunk_of.values()) > 500
    for k in range(3):
        part = playlists[200 * k : 200 * (k + 1)]
        rows = sum(p["num_tracks"] for p in part)
        once = Counter(t["track_uri"] for p in part for t in p["tracks"])
        only_here = [u for u, c in once.items() if c == 1 and chunk_of[u] == {k}]
        assert 0.02 < len(only_here) / rows < 0.3
        assert 50 <= np.median([p["num_tracks"] for p in part]) <= 90
    # A slice larger than the chunk: one slice a chunk; a single chunk draws as before.
    monkeypatch.setattr(synth, "_CHUNK_PLAYLISTS", 30)
    c = generate(120, tmp_path / "c", seed=2, playlists_per_slice=50)
    assert [p["pid"] for p in _load(c)] == list(range(120))
    monkeypatch.setattr(synth, "_CHUNK_PLAYLISTS", 150)
    d = generate(120, tmp_path / "d", seed=2, playlists_per_slice=50)
    monkeypatch.setattr(synth, "_CHUNK_PLAYLISTS", 50_000)
    e = generate(120, tmp_path / "e", seed=2, playlists_per_slice=50)
    assert all(pd.read_bytes() == pe.read_bytes() for pd, pe in zip(d, e, strict=True))
    assert any(pc.read_bytes() != pe.read_bytes() for pc, pe in zip(c, e, strict=True))


def test_sizing_keeps_small_runs_and_grows_heaps_like_to_mpd() -> None:
    # Up to 10,000 playlists: the sizing every test is tuned on (6 tracks a playlist).
    for n in (1, 200, 3000, 10_000):
        size = synth._sizing(n)
        assert size.catalog == max(4_000, 6 * n) and size.cold_scale == 1.0
        assert (size.length_median, size.length_sigma) == (68.0, 0.8)
    # Continuous at the switch.
    a, b = synth._sizing(10_000), synth._sizing(10_001)
    assert abs(b.catalog - a.catalog) < 10 and abs(b.cold_scale - 1.0) < 1e-3
    # Distinct tracks grow sublinearly (Heaps) above it, to about MPD's at 1 M playlists.
    sizes = [10_000, 30_000, 100_000, 300_000, 1_000_000]
    distinct = [synth._sizing(n).expected_distinct(n) for n in sizes]
    slopes = np.diff(np.log(distinct)) / np.diff(np.log(sizes))
    assert np.all((slopes > 0.5) & (slopes < 0.8))
    mpd = synth._sizing(1_000_000)
    mean_length = synth._mean_length(mpd.length_median, mpd.length_sigma)
    assert 64 < mean_length < 68  # MPD: 66.3 rows a playlist (66 M rows)
    assert 2.0e6 < mpd.expected_distinct(1_000_000) < 2.7e6  # MPD: 2.26 M distinct tracks
    assert synth._mean_length(68.0, 0.8) == pytest.approx(78.7, abs=0.2)
