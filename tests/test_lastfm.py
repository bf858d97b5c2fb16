"""LastFM benchmark harness, on tiny synthetic files written in the LLaRA format."""

from __future__ import annotations

import json

import numpy as np
import pytest
from lastfm_files import prefix_rows, write_split

from llarapp.benchmark.lastfm import run
from llarapp.benchmark.lastfm.data import (
    LastFMData,
    Row,
    candidate_sets,
    hit_ratio_at_1,
    load_lastfm,
    pad_histories,
    user_sequences,
)
from llarapp.benchmark.lastfm.run import SCORERS, format_table, register_scorer, run_lastfm
from llarapp.benchmark.lastfm.scorers import item_counts

N_ITEMS = 60
PAD = N_ITEMS
WIDTH = 10


def _user_seqs(n_users: int, rng: np.random.Generator) -> list[list[int]]:
    # users walk a ring of items, so the next item is predictable from the last one
    seqs = []
    for _ in range(n_users):
        start, length = int(rng.integers(N_ITEMS)), int(rng.integers(4, 15))
        seqs.append([(start + k) % N_ITEMS for k in range(length)])
    return seqs


@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    train_seqs = _user_seqs(30, rng)
    val = []
    for s in _user_seqs(12, rng):
        val.append(prefix_rows(s, PAD, WIDTH)[-1])  # last row of each user
    val.append(prefix_rows([1, 2, 3], PAD, WIDTH)[2])  # len_seq 2: filtered out
    val.append(prefix_rows([5, 6], PAD, WIDTH)[0])  # empty history (len_seq 1): filtered out
    names = [f"Artist {i} Caf\u00e9" for i in range(N_ITEMS)]
    return write_split(tmp_path, train_seqs, val, names, PAD)


def _rows(n: int = 40, seed: int = 0) -> list[Row]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        items = rng.choice(N_ITEMS, 6, replace=False).tolist()
        out.append(Row(history=tuple(items[:5]), target=items[5], len_seq=5))
    return out


def test_load_filters_and_parses(data_dir):
    data = load_lastfm(data_dir, "val")
    assert isinstance(data, LastFMData)
    assert data.n_items == N_ITEMS and data.pad_id == PAD
    assert data.names[3] == "Artist 3 Caf\u00e9"  # CRLF stripped, UTF-8 read
    assert data.eval_rows_total == 14 and len(data.eval_rows) == 12
    assert all(r.len_seq >= 3 and PAD not in r.history for r in data.eval_rows)
    assert all(len(r.history) <= WIDTH for r in data.train)


def test_user_sequences_rebuild_training_users(data_dir):
    data = load_lastfm(data_dir)
    seqs = user_sequences(data.train)
    assert len(seqs) == 30
    assert sum(len(s) for s in seqs) == len(data.train)
    # without the empty-history rows, users are still split where the window breaks
    no_empty = [r for r in data.train if r.history]
    assert user_sequences(no_empty) == seqs
    # popularity counts every item of every user once, not once per window
    counts = item_counts(data)
    expected = np.bincount([i for s in seqs for i in s], minlength=N_ITEMS)
    assert np.array_equal(counts, expected)


def test_pad_histories_keeps_the_last_items():
    hist, lengths = pad_histories([[1, 2, 3], [4]], max_len=2, pad_id=PAD)
    assert hist.tolist() == [[2, 3], [4, PAD]] and lengths.tolist() == [2, 1]
    with pytest.raises(ValueError, match="history 1 is empty"):
        pad_histories([[1], []], 2, PAD)


def test_candidate_sets():
    rows = _rows()
    c = candidate_sets(rows, N_ITEMS, seed=1)
    assert c.shape == (len(rows), 20)
    for row, cands in zip(rows, c, strict=True):
        assert len(set(cands.tolist())) == 20
        assert (cands == row.target).sum() == 1
        assert not set(cands.tolist()) & set(row.history)
        assert cands.min() >= 0 and cands.max() < N_ITEMS  # never the pad id
    assert np.array_equal(c, candidate_sets(rows, N_ITEMS, seed=1))
    assert not np.array_equal(c, candidate_sets(rows, N_ITEMS, seed=2))
    positions = np.argmax(c == np.array([r.target for r in rows])[:, None], axis=1)
    assert len(set(positions.tolist())) > 5  # the target is not always in the same slot


def test_candidate_sets_too_few_items():
    with pytest.raises(ValueError, match="negatives"):
        candidate_sets([Row(tuple(range(15)), 15, 10)], 20, seed=0)


def test_hit_ratio_ties_count_against_target():
    cands = np.array([[7, 8, 9], [1, 2, 3], [4, 5, 6], [10, 11, 12]])
    targets = np.array([7, 2, 6, 10])
    scores = np.array(
        [
            [0.9, 0.1, 0.2],  # target strictly best: hit
            [0.5, 0.4, 0.0],  # target second: miss
            [0.3, 0.1, 0.3],  # target tied at the top: miss
            [1.0, 1.0, 1.0],  # all tied: miss
        ]
    )
    assert hit_ratio_at_1(scores, cands, targets) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        hit_ratio_at_1(scores[:, :2], cands, targets)
    with pytest.raises(ValueError, match="NaN"):
        hit_ratio_at_1(np.full(cands.shape, np.nan), cands, targets)


def test_oracle_and_random_scores():
    rows = _rows(400)
    targets = np.array([r.target for r in rows])
    hits = []
    for seed in range(5):
        c = candidate_sets(rows, N_ITEMS, seed)
        assert hit_ratio_at_1((c == targets[:, None]).astype(float), c, targets) == 1.0
        random = np.random.default_rng(seed + 100).random(c.shape)
        hits.append(hit_ratio_at_1(random, c, targets))
    assert 0.03 < np.mean(hits) < 0.07


class _Oracle:
    """Knows each history's next item (the training data is a ring walk)."""

    name = "oracle"

    def fit(self, data):
        self.n = data.n_items

    def score(self, histories, candidates):
        nxt = np.array([(h[-1] + 1) % self.n for h in histories])
        return (candidates == nxt[:, None]).astype(float)


def test_run_lastfm_writes_documented_json(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(run, "SCORERS", dict(SCORERS))  # keep the registry clean
    register_scorer("oracle")(_Oracle)
    with pytest.raises(ValueError, match="already registered"):
        register_scorer("oracle")(lambda: _Oracle())
    out = tmp_path / "res" / "lastfm.json"
    result = run_lastfm(
        data_dir, "val", out, seeds=3, scorers=["oracle", "most_popular", "cooccurrence"]
    )
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert set(on_disk) >= {"models", "dataset", "seconds"}
    assert list(on_disk["models"]) == ["oracle", "most_popular", "cooccurrence"]
    for m in on_disk["models"].values():
        assert set(m) == {"hr@1", "hr@1_std", "per_seed"} and len(m["per_seed"]) == 3
        assert m["hr@1"] == pytest.approx(np.mean(m["per_seed"]))
    assert on_disk["models"]["oracle"]["hr@1"] == 1.0
    assert on_disk["models"]["oracle"]["hr@1_std"] == 0.0
    assert on_disk["dataset"]["eval_rows"] == 12 and on_disk["dataset"]["train_users"] == 30
    assert {"load", "candidates", "fit:oracle", "score:oracle", "total"} <= set(on_disk["seconds"])
    table = format_table(on_disk)
    assert "| oracle | 1.0000 | 0.0000 |" in table
    with pytest.raises(ValueError, match="unknown scorers"):
        run_lastfm(data_dir, "val", None, seeds=1, scorers=["nope"])


def test_sasrec_learns_the_ring(data_dir):
    data = load_lastfm(data_dir)
    scorer = SCORERS["sasrec"]()
    scorer.epochs, scorer.dim, scorer.blocks, scorer.lr = 12, 16, 1, 2e-2
    scorer.fit(data)
    histories = [list(r.history) for r in data.eval_rows]
    targets = np.array([r.target for r in data.eval_rows])
    c = candidate_sets(data.eval_rows, data.n_items, seed=0)
    scores = scorer.score(histories, c)
    assert scores.shape == c.shape
    assert hit_ratio_at_1(scores, c, targets) > 0.5
    assert scorer.losses[-1] < scorer.losses[0]


def test_missing_files_are_named(data_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Test_data\.jsonl"):
        load_lastfm(data_dir, "test")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_lastfm(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="split"):
        load_lastfm(data_dir, "train")
    (data_dir / "id2name.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"id2name\.txt"):
        load_lastfm(data_dir)


def test_malformed_row_is_reported(data_dir):
    with (data_dir / "Val_data.jsonl").open("a") as f:
        f.write('{"seq": [1, 2, 3]}\n')
    with pytest.raises(ValueError, match=r"Val_data.jsonl:\d+.*len_seq"):
        load_lastfm(data_dir)
