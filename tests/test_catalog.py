"""``llarapp catalog add``: new releases join a trained model's catalogue without retraining.

Added tracks by an artist the model has played are recommended for seeds by that artist
(offline and through the serving engine); a malformed file is refused with its line numbers
and leaves the model as it was; nothing already in the catalogue changes.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from llarapp.cli import main
from llarapp.data.dataset import Case, Track
from llarapp.models.base import ARRAYS_FILE, Recommender
from llarapp.models.llarapp.catalog import (
    GENERATED_PREFIX,
    PER_TRACK,
    TracksFileError,
    add_tracks,
    generated_uri,
    parse_new_tracks,
    read_new_tracks,
)
from llarapp.models.retriever import Retriever

K = 50  # added tracks must reach the top K for seeds by their artist


def _copy(tiny, tmp_path):
    return shutil.copytree(tiny[2], tmp_path / "model")


def _arrays(model_dir) -> dict[str, np.ndarray]:
    with np.load(model_dir / ARRAYS_FILE, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _digest(model_dir) -> dict[str, str]:
    return {
        str(p.relative_to(model_dir)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(model_dir.rglob("*"))
        if p.is_file()
    }


def _played_artists(model, n: int) -> list[tuple[str, np.ndarray]]:
    """The ``n`` artists with the most warm tracks: (name, their warm catalogue indices)."""
    st = model.stage
    codes = st.retriever.artist_codes[: st.n_warm]
    counts = np.bincount(codes[codes >= 0])
    out = []
    for code in np.argsort(-counts, kind="stable")[:n]:
        warm = np.flatnonzero(codes == code)
        out.append((str(model.names.artist_name[warm[0]]), warm))
    return out


def _write(path, lines) -> str:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return str(path)


def test_added_tracks_are_recommended_for_seeds_by_their_artist(tiny, tmp_path):
    from llarapp.serving.engine import ServingEngine
    from llarapp.serving.request import RecommendRequest

    model_dir, old = _copy(tiny, tmp_path), tiny[3]
    before = _arrays(model_dir)
    artists = _played_artists(old, 4)
    existing = str(old.stage.catalog.uris[0])
    lines = [
        {"track_name": f"First Light {i}", "artist_name": name, "album_name": "New Dawn"}
        for i, (name, _) in enumerate(artists)
    ]
    lines.append({"track_name": "Static Bloom", "artist_name": "Nobody Played Us Yet"})
    lines.append(
        {"track_name": "Given URI", "artist_name": "Nobody Played Us Yet", "track_uri": "x:1"}
    )
    lines.append({"track_name": "Already there", "artist_name": "whoever", "track_uri": existing})
    report = add_tracks(model_dir, read_new_tracks(_write(tmp_path / "new.jsonl", lines)))

    n = len(before["track_uris"])
    assert report["catalogue_before"] == n and report["catalogue_after"] == n + 6
    assert (report["added"], report["from_artist"], report["from_projector"]) == (6, 4, 2)
    assert report["new_artists"] == 1 and report["generated_uris"] == 5
    assert report["skipped"] == [
        {"line": 7, "track_uri": existing, "reason": "already in the catalogue"}
    ]

    # nothing already in the catalogue changes: every old array is the new one's prefix
    after = _arrays(model_dir)
    for key, value in before.items():
        grown = (
            after[key][: len(value)] if key in PER_TRACK or key == "artist_names" else after[key]
        )
        np.testing.assert_array_equal(grown, value, err_msg=key)
        assert after[key].dtype == value.dtype, key
    assert int(after["n_trained"]) == n
    assert all(len(after[k]) == n + 6 for k in PER_TRACK)
    new_uris = after["track_uris"][n:].tolist()
    assert new_uris[-1] == "x:1" and all(u.startswith(GENERATED_PREFIX) for u in new_uris[:-1])
    assert new_uris[0] == generated_uri("First Light 0", artists[0][0], "New Dawn")
    # a played artist's new track: the mean of its warm tracks' ALS vectors, and its code
    for i, (_, warm) in enumerate(artists):
        mean = before["behavior"][warm].astype(np.float64).mean(axis=0)
        np.testing.assert_allclose(after["behavior"][n + i], mean, rtol=1e-5, atol=1e-6)
        assert after["artist_codes"][n + i] == before["artist_codes"][warm[0]]
    assert (
        after["artist_codes"][n + 4] == after["artist_codes"][n + 5] == len(before["artist_names"])
    )
    assert after["artist_names"][-1] == "nobody played us yet"

    model = Recommender.load(model_dir)  # the reload a restarted server does
    assert model.stage.n_warm == old.stage.n_warm
    resaved = Recommender.load(model.save(tmp_path / "resaved"))  # saving keeps what was added
    assert resaved.stage.retriever.n_trained == n and len(resaved.track_uris) == n + 6
    assert model.names.track_name[n] == "First Light 0"
    assert model.names.artist_name[n + 5] == "Nobody Played Us Yet"
    engine = ServingEngine(model, model_dir, "test", ranker_backend="torch")
    rng = np.random.default_rng(0)
    for i, (name, warm) in enumerate(artists):
        seeds = rng.choice(warm, size=5, replace=False)
        tracks = tuple(
            Track(model.names.track_name[j], name, str(model.stage.catalog.uris[j])) for j in seeds
        )
        uri = new_uris[i]
        offline = model.recommend(Case(title=None, seeds=tracks), K)
        assert uri in offline, f"{name}: its new release is not in the top {K}"
        served = engine.run(RecommendRequest(None, tracks, k=K))["recommended_tracks"]
        assert [t["track_uri"] for t in served] == offline  # one path: the server agrees
        by_name = {t["track_uri"]: t for t in served}[uri]
        assert (by_name["track_name"], by_name["artist_name"]) == (f"First Light {i}", name)

    # adding the same file again adds nothing and changes nothing
    digest = _digest(model_dir)
    again = add_tracks(model_dir, read_new_tracks(tmp_path / "new.jsonl"))
    assert again["added"] == 0 and len(again["skipped"]) == 7
    assert _digest(model_dir) == digest


def test_malformed_file_is_refused_with_line_numbers_and_the_model_untouched(tiny, tmp_path):
    model_dir = _copy(tiny, tmp_path)
    digest = _digest(model_dir)
    lines = [
        {"track_name": "Good", "artist_name": "Fine"},  # 1
        "{not json",  # 2
        "[1, 2]",  # 3
        {"track_name": "No artist"},  # 4
        {"track_name": "", "artist_name": "Empty name"},  # 5
        {"track_name": 7, "artist_name": "Number"},  # 6
        {"track_name": "Typo", "artist_name": "A", "albun_name": "B"},  # 7
        "",  # 8: blank lines are skipped
        {"track_name": "Dup", "artist_name": "A", "track_uri": "u:1"},  # 9
        {"track_name": "Dup again", "artist_name": "A", "track_uri": "u:1"},  # 10
    ]
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(TracksFileError) as info:
        add_tracks(model_dir, read_new_tracks(path))
    problems = dict(info.value.problems)
    assert sorted(problems) == [2, 3, 4, 5, 6, 7, 10]
    assert "not JSON" in problems[2] and "expected an object" in problems[3]
    assert "'artist_name' missing" in problems[4] and "'track_name' is empty" in problems[5]
    assert "expected a string" in problems[6] and "'albun_name'" in problems[7]
    assert "repeats line 9" in problems[10]
    message = str(info.value)
    assert "line 2:" in message and "line 10:" in message and "nothing added" in message
    assert _digest(model_dir) == digest

    # the command: exit 2, the line numbers on stderr, nothing written
    assert main(["catalog", "add", "--model", str(model_dir), "--tracks", path]) == 2
    assert _digest(model_dir) == digest


def test_parse_accepts_optional_fields_and_names_without_uri_deterministically():
    tracks = parse_new_tracks(
        [
            json.dumps({"track_name": " Song ", "artist_name": "Band", "album_name": "LP"}),
            json.dumps({"track_name": "Song", "artist_name": "Band", "track_uri": "spotify:x"}),
        ]
    )
    assert tracks[0].track_name == "Song" and tracks[0].generated and tracks[0].line == 1
    assert tracks[0].track_uri == generated_uri("song", "BAND", "lp")
    assert tracks[0].text == "Song by Band from LP"
    assert tracks[1].track_uri == "spotify:x" and not tracks[1].generated


def test_catalog_add_command(tiny, tmp_path, capsys):
    model_dir = _copy(tiny, tmp_path)
    (name, _), *_ = _played_artists(tiny[3], 1)
    existing = str(tiny[3].stage.catalog.uris[3])
    path = _write(
        tmp_path / "new.jsonl",
        [
            {"track_name": "Encore", "artist_name": name},
            {"track_name": "Dup", "artist_name": name, "track_uri": existing},
        ],
    )
    assert main(["catalog", "add", "--model", str(model_dir), "--tracks", path]) == 0
    out = capsys.readouterr().out
    assert "added 1 track(s)" in out and "1 from their artist" in out
    assert "1 skipped as already present" in out and f"line 2: {existing}" in out
    assert Recommender.load(model_dir).names.track_name[-1] == "Encore"


def test_the_artist_source_is_unchanged_for_a_model_without_added_tracks(tiny):
    """It votes for exactly the warm tracks with an artist, as before new releases existed;
    ``n_trained`` equal to the catalogue size (nothing added) votes the same."""
    st = tiny[3].stage
    r = st.retriever
    assert "n_trained" not in _arrays(tiny[2])
    voted = np.unique(r._artist_tracks.indices)
    np.testing.assert_array_equal(voted, np.flatnonzero(r.artist_codes[: st.n_warm] >= 0))
    same = Retriever(
        r.behavior,
        r.is_cold,
        r.popularity,
        r.item_playlists,
        artist_codes=r.artist_codes,
        n_trained=r.n_items,
    )
    assert (same._artist_tracks != r._artist_tracks).nnz == 0
