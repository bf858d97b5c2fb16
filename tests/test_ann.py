"""Approximate retrieval above ``ann_threshold`` and memory-mapped model arrays."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from llarapp.data.dataset import Case, Track
from llarapp.models.ann import ANN_DIR, AnnIndex, recall_of
from llarapp.models.base import ARRAYS_FILE, MODEL_FILE, Recommender
from llarapp.models.npz import load_npz
from llarapp.models.retriever import FEATURES, row_votes


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n // 50, d)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.3 * rng.standard_normal((n, d))
    return (x * rng.lognormal(0, 0.3, (n, 1))).astype(np.float32)  # norms differ, as ALS's


def test_load_npz_maps_big_arrays_read_only_and_reads_the_rest(tmp_path):
    arrays = {
        "big": np.arange(40_000, dtype=np.float32).reshape(400, 100),
        "fortran": np.asfortranarray(np.ones((200, 100))),
        "uris": np.array([f"spotify:track:{i:022d}" for i in range(2_000)]),
        "small": np.arange(5),
        "scalar": np.array(7),
    }
    np.savez(tmp_path / "a.npz", **arrays)
    loaded = load_npz(tmp_path / "a.npz")
    assert set(loaded) == set(arrays)
    for name, want in arrays.items():
        assert loaded[name].dtype == want.dtype and np.array_equal(loaded[name], want), name
    for name in ("big", "fortran", "uris"):  # mapped: read-only views of the file
        assert not loaded[name].flags.writeable and isinstance(loaded[name].base, np.memmap)
    assert loaded["small"].flags.writeable
    np.savez_compressed(tmp_path / "c.npz", **arrays)  # compressed members are read
    assert all(np.array_equal(load_npz(tmp_path / "c.npz")[k], v) for k, v in arrays.items())
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"not an \.npz file"):
        load_npz(tmp_path / "bad.npz")
    objects = np.array([{"a": 1}] * 20_000, dtype=object)  # an object array is refused
    with zipfile.ZipFile(tmp_path / "o.npz", "w") as zf, zf.open("o.npy", "w") as member:
        np.lib.format.write_array(member, objects)
    with pytest.raises(ValueError, match=r"(?i)object"):
        load_npz(tmp_path / "o.npz")


def test_index_finds_the_top_rows_and_loads_mapped(tmp_path):
    x = _clustered(6_000, 16)
    index = AnnIndex.build(x, nprobe=4)
    assert index.nlist == 23 and index.offsets[-1] == len(x)  # min(n / 256, sqrt(n)) lists
    assert np.array_equal(np.sort(index.order), np.arange(len(x)))  # every row in one list
    queries = x[:40] + 0.01
    exact = np.argsort(-(queries @ x.T), axis=1)[:, :50]
    scores, rows = index.search(queries, 50)
    assert rows.shape == (40, 50)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ x.T, rows, 1), rtol=1e-4)
    recall = np.mean([recall_of(r, e) for r, e in zip(rows, exact, strict=True)])
    assert 0.8 <= recall < 1.0  # 4 lists of 23: most, not all
    index.nprobe = 10_000  # capped: every list, the exact answer
    assert index.nprobe == index.nlist
    assert np.array_equal(index.search(queries, 50)[1], exact)
    index.save(tmp_path, "v")
    loaded = AnnIndex.load(tmp_path, "v", x.shape)
    assert not loaded.vectors.flags.writeable  # mapped
    assert np.array_equal(loaded.search(queries, 50)[1], exact)
    assert AnnIndex.load(tmp_path, "v", (len(x) + 1, 16)) is None  # another catalogue
    assert AnnIndex.load(tmp_path, "missing", x.shape) is None
    with pytest.raises(ValueError, match="at least 2 rows"):
        AnnIndex.build(x[:1])


@pytest.mark.parametrize("n", [50, 5_000])  # many votes for few tracks, and few for many
def test_row_votes_are_the_sparse_product(n):
    rng = np.random.default_rng(0)
    csr = sp.random(300, n, density=0.01, format="csr", random_state=1, dtype=np.float32)
    rows, weights = np.array([3, 7, 7, 120]), rng.random(4)
    votes = row_votes(csr, rows, weights, n)
    want = csr[rows].T @ weights
    assert np.all(np.diff(votes.rows) > 0) and len(votes) == n
    np.testing.assert_allclose(votes[np.arange(n)], want, rtol=1e-5)
    np.testing.assert_allclose(votes.values, want[votes.rows], rtol=1e-5)
    assert set(np.flatnonzero(want)) <= set(votes.rows)


def test_a_model_above_its_threshold_retrieves_by_index_and_shares_its_arrays(tiny, tmp_path):
    model_dir = shutil.copytree(tiny[2], tmp_path / "model")
    meta = json.loads((model_dir / MODEL_FILE).read_text())
    meta["config"]["ann_threshold"] = 10  # every catalogue and title set is "large"
    (model_dir / MODEL_FILE).write_text(json.dumps(meta))
    built = Recommender.load(model_dir)  # no index saved yet: built at load
    built.save(model_dir)
    assert {p.name for p in (model_dir / ANN_DIR).iterdir()} == {
        "behavior.npz", "behavior.json", "titles.npz", "titles.json",
    }  # fmt: skip
    model, exact_model = Recommender.load(model_dir), Recommender.load(tiny[2])
    retriever, exact = model.stage.retriever, exact_model.stage.retriever
    assert retriever.behavior_index is not None and retriever.title_index is not None
    assert exact.behavior_index is None and exact.title_index is None
    assert not model.stage.behavior.flags.writeable  # mapped from arrays.npz
    assert model.stage.catalog.text.dtype == np.float16
    for index in (retriever.behavior_index, retriever.title_index):
        assert index.meta["recall"] >= 0.99 or index.meta["nprobe"] == index.meta["nlist"]
    names = tiny[3].names
    cases = [  # title + seeds: both dense sources and the title lookup
        Case(
            title="summer hits",
            seeds=[
                Track(names.track_name[j], names.artist_name[j], str(model.track_uris[j]))
                for j in (i, i + 1)
            ],
        )
        for i in range(0, 60, 6)
    ]
    for case in cases:  # the indexed path as tuned
        ranked = model.recommend(case, 20)
        assert len(ranked) == 20 and not set(ranked) & {t.track_uri for t in case.seeds}
    for index in (retriever.behavior_index, retriever.title_index):
        index.nprobe = index.nlist  # every list read: the exact answer
    for case in cases:  # the same candidates (near-ties may swap: sums in another order, and
        # so may the reciprocal ranks of tracks the sources score alike)
        got, want = model.candidates(case), exact_model.candidates(case)
        g, w = np.argsort(got.candidates), np.argsort(want.candidates)
        np.testing.assert_array_equal(got.candidates[g], want.candidates[w])
        scores = [j for j, name in enumerate(FEATURES) if name != "rrf"]  # rrf: ranks, near-ties
        np.testing.assert_allclose(
            got.features[g][:, scores], want.features[w][:, scores], atol=1e-4
        )
    arrays = load_npz(model_dir / ARRAYS_FILE, mmap=False)
    assert len(arrays["behavior"]) == retriever.behavior_index.rows


def test_catalog_add_extends_the_saved_behavior_index_so_loading_builds_none(
    tiny, tmp_path, caplog
):
    from llarapp.models.llarapp import add_tracks, read_new_tracks

    model_dir = shutil.copytree(tiny[2], tmp_path / "model")
    meta = json.loads((model_dir / MODEL_FILE).read_text())
    meta["config"]["ann_threshold"] = 10
    (model_dir / MODEL_FILE).write_text(json.dumps(meta))
    Recommender.load(model_dir).save(model_dir)  # the index, built and tuned
    nprobe = json.loads((model_dir / ANN_DIR / "behavior.json").read_text())["nprobe"]
    artist = str(tiny[3].names.artist_name[0])
    lines = [{"track_name": f"New {i}", "artist_name": a} for i, a in enumerate([artist, "Nobody"])]
    (tmp_path / "new.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    add_tracks(model_dir, read_new_tracks(tmp_path / "new.jsonl"))
    caplog.clear()  # (the first load above built the index, as logged)
    with caplog.at_level("WARNING"):
        model = Recommender.load(model_dir)
    assert "built one now" not in caplog.text and "not used" not in caplog.text
    index, behavior = model.stage.retriever.behavior_index, model.stage.behavior
    assert index.rows == len(behavior) == len(model.track_uris) and index.nprobe == nprobe
    assert sorted(index.order.tolist()) == list(range(len(behavior)))  # every row once
    np.testing.assert_array_equal(index.vectors, behavior[index.order])
    index.nprobe = index.nlist
    scores, _ = index.search(behavior[-2:], 5)  # the new rows are found as exact search does
    want = -np.sort(-(behavior[-2:] @ behavior.T), axis=1)[:, :5]
    np.testing.assert_allclose(scores, want, rtol=1e-5)
