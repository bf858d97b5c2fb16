"""Split: seeded, leakage-free folds and challenge cases that partition each playlist."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from llarapp.config import SplitConfig
from llarapp.data.dataset import load_cases, load_train
from llarapp.data.split import CATEGORIES, CATEGORY_NAMES, assign_categories, split


@pytest.fixture(scope="module")
def tables(prepared):
    data, split_dir = prepared
    inter = pq.read_table(data / "interactions.parquet").to_pandas().sort_values(["pid", "pos"])
    folds = pq.read_table(split_dir / "folds.parquet").to_pandas()
    cases = pq.read_table(split_dir / "cases.parquet").to_pandas()
    return inter, folds, cases


def test_folds_cover_every_playlist_once_in_configured_shares(prepared, tables):
    data, _ = prepared
    _, folds, _ = tables
    playlists = pq.read_table(data / "playlists.parquet").to_pandas()
    assert sorted(folds["pid"]) == sorted(playlists["pid"])
    shares = folds["fold"].value_counts(normalize=True)
    assert shares["test"] == pytest.approx(0.2, abs=0.01)
    assert shares["valid"] == pytest.approx(0.1, abs=0.01)


def test_cases_partition_their_playlist(tables):
    inter, _folds, cases = tables
    tracks_of = inter.groupby("pid")["track_uri"].apply(list).to_dict()
    by_name = {c.name: c for c in CATEGORIES}
    assert set(cases["fold"]) == {"valid", "test"}
    for row in cases.itertuples():
        cat = by_name[row.category]
        full = tracks_of[row.pid]
        assert len(row.seed_uris) == cat.n_seeds
        assert sorted([*row.seed_uris, *row.hidden_uris]) == sorted(full)
        assert len(row.hidden_uris) >= max(5, cat.n_seeds // 2)
        if not cat.random:
            assert list(row.seed_uris) == full[: cat.n_seeds]
        assert pd.isna(row.title) == (not cat.title)


def test_no_leakage_and_cold_flags_are_exact(prepared, tables):
    data, split_dir = prepared
    inter, folds, cases = tables
    train = load_train(data, split_dir)
    train_pids = set(folds.loc[folds["fold"] == "train", "pid"])
    assert set(train.pids) == train_pids
    warm = set(inter.loc[inter["pid"].isin(train_pids), "track_uri"])
    assert set(train.track_uris) == warm
    assert train.matrix.nnz == inter["pid"].isin(train_pids).sum()
    assert not set(cases["pid"]) & train_pids
    for row in cases.itertuples():
        assert list(row.hidden_cold) == [u not in warm for u in row.hidden_uris]
    assert any(c for flags in cases["hidden_cold"] for c in flags), "synthetic set has cold tracks"


def test_every_category_is_used(tables):
    *_, cases = tables
    counts = cases.loc[cases["fold"] == "test", "category"].value_counts()
    assert set(counts.index) == set(CATEGORY_NAMES)
    assert counts.min() >= 5


def test_split_is_deterministic_and_seeded(prepared, tmp_path):
    data, split_dir = prepared
    split(data, tmp_path / "again", SplitConfig(seed=3))
    split(data, tmp_path / "other", SplitConfig(seed=4))
    same = pq.read_table(tmp_path / "again" / "cases.parquet")
    assert same.equals(pq.read_table(split_dir / "cases.parquet"))
    assert not pq.read_table(tmp_path / "other" / "cases.parquet").equals(same)


def test_short_playlists_fill_short_categories_first():
    lengths = np.array([6] * 10 + [300] * 90)
    chosen = assign_categories(lengths, SplitConfig(), np.random.default_rng(0))
    assert all(c.n_seeds <= 1 for c in chosen[:10])
    names = [c.name for c in chosen]
    assert {names.count(n) for n in CATEGORY_NAMES} == {10}


def test_cases_carry_seed_text(prepared):
    data, split_dir = prepared
    cases = load_cases(data, split_dir, "test")
    seeded = next(c for c in cases if c.case.seeds)
    assert all(t.track_name and t.artist_name and t.track_uri for t in seeded.case.seeds)
    with pytest.raises(ValueError, match="fold='train'"):
        load_cases(data, split_dir, "train")


def test_bad_config_and_missing_input(tmp_path):
    with pytest.raises(ValueError, match=r"valid_frac\+test_frac"):
        SplitConfig(valid_frac=0.5, test_frac=0.6)
    with pytest.raises(FileNotFoundError, match="llarapp data ingest"):
        split(tmp_path, tmp_path / "out")


def test_distractor_playlists_only_lend_their_tracks_to_the_catalogue(prepared, tmp_path):
    from llarapp.data.split import subset_ingest

    data, _ = prepared
    plain = split(data, tmp_path / "plain", SplitConfig(seed=3))
    config = SplitConfig(seed=3, distractor_frac=0.25)
    report = split(data, tmp_path / "aside", config)
    folds = pq.read_table(tmp_path / "aside" / "folds.parquet").to_pandas()
    before = pq.read_table(tmp_path / "plain" / "folds.parquet").to_pandas()
    # the same test and validation playlists with or without distractors
    for fold in ("valid", "test"):
        assert set(folds.loc[folds["fold"] == fold, "pid"]) == set(
            before.loc[before["fold"] == fold, "pid"]
        )
    assert report["playlists"]["distractor"] == round(len(folds) * 0.25)
    assert report["playlists"]["train"] == plain["playlists"]["train"] - round(len(folds) * 0.25)
    aside = set(folds.loc[folds["fold"] == "distractor", "pid"])
    cases = pq.read_table(tmp_path / "aside" / "cases.parquet").to_pandas()
    assert not set(cases["pid"]) & aside
    assert not set(load_train(data, tmp_path / "aside").pids) & aside
    counts = subset_ingest(data, tmp_path / "aside", ("train", "valid"), tmp_path / "sub")
    sub = pq.read_table(tmp_path / "sub" / "playlists.parquet").to_pandas()
    assert set(sub["pid"]) == set(folds.loc[folds["fold"].isin(["train", "valid"]), "pid"])
    tracks = pq.read_table(data / "tracks.parquet")
    assert counts["tracks"] == tracks.num_rows  # the whole catalogue stays
    with pytest.raises(ValueError, match=r"unknown fold\(s\) \['nope'\]"):
        subset_ingest(data, tmp_path / "aside", ("nope",), tmp_path / "bad")


def test_split_config_refuses_shares_that_leave_no_training_playlists():
    with pytest.raises(ValueError, match=r"valid_frac\+test_frac\+distractor_frac"):
        SplitConfig(valid_frac=0.3, test_frac=0.3, distractor_frac=0.4)
    with pytest.raises(ValueError, match="distractor_frac"):
        SplitConfig(distractor_frac=-0.1)
