"""LLaRA++ scorer for the LastFM protocol, on tiny synthetic files written in the LLaRA format."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from lastfm_files import prefix_rows, write_split

from llarapp.benchmark.lastfm import run
from llarapp.benchmark.lastfm.data import (
    candidate_sets,
    hit_ratio_at_1,
    load_lastfm,
    user_sequences,
)
from llarapp.benchmark.lastfm.llara import (
    FEATURES,
    MPD_FEATURES,
    LlaraLastFMConfig,
    LlaraLastFMScorer,
    mpd_artist_cosine,
    sample_candidates,
    sequence_examples,
)
from llarapp.benchmark.lastfm.run import SCORERS, run_lastfm
from llarapp.benchmark.lastfm.scorers import SequentialScorer

N_ITEMS = 60
PAD = N_ITEMS
WIDTH = 10
TEXT_DIM = 12


def _ring_users(n_users: int, rng: np.random.Generator) -> list[list[int]]:
    """Users walk a ring of items (a few steps skipped), so the next item follows the last."""
    seqs = []
    for _ in range(n_users):
        item, seq = int(rng.integers(N_ITEMS)), []
        for _ in range(int(rng.integers(8, 18))):
            seq.append(item)
            item = (item + 1 + int(rng.random() < 0.2)) % N_ITEMS
        seqs.append(seq)
    return seqs


@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    train = _ring_users(60, rng)
    val = [prefix_rows(s, PAD, WIDTH)[int(rng.integers(3, len(s)))] for s in _ring_users(40, rng)]
    return write_split(tmp_path, train, val, [f"Artist {i}" for i in range(N_ITEMS)], PAD)


class _HashEncoder:
    """Deterministic stand-in for MiniLM: a unit vector seeded by each text's CRC32."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        out = np.stack(
            [np.random.default_rng(zlib.crc32(t.encode())).standard_normal(TEXT_DIM) for t in texts]
        ).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _tiny(**overrides) -> LlaraLastFMConfig:
    config = dict(
        window=2,
        long_window=5,
        als_factors=4,
        als_iterations=3,
        transition_factors=4,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=32,
        feature_epochs=2,
        epochs=2,
        batch_size=32,
        seed=3,
        ensemble=1,
        text_cache_dir=None,
    )
    config.update(overrides)
    return LlaraLastFMConfig(**config)


def _eval(scorer, data, seed: int = 0):
    histories = [list(r.history) for r in data.eval_rows]
    targets = np.array([r.target for r in data.eval_rows])
    cands = candidate_sets(data.eval_rows, data.n_items, seed)
    return scorer.score(histories, cands), cands, targets


def test_registered_as_a_sequential_scorer():
    assert "llara++" in SCORERS
    scorer = SCORERS["llara++"]()
    assert isinstance(scorer, SequentialScorer) and scorer.name == "llara++"
    assert isinstance(scorer, LlaraLastFMScorer)


def test_fits_scores_and_is_deterministic(data_dir):
    data = load_lastfm(data_dir)
    scorer = LlaraLastFMScorer(_tiny(), encoder=_HashEncoder())
    scorer.fit(data)
    scores, cands, targets = _eval(scorer, data)
    assert scores.shape == (len(data.eval_rows), 20) == cands.shape
    assert scores.dtype == np.float64 and np.isfinite(scores).all()
    # the ring is learnable: far above random (1 / 20)
    assert hit_ratio_at_1(scores, cands, targets) > 0.5
    # training started from the co-occurrence score and logged each epoch
    assert scorer.history[0]["phase"] == "start" and len(scorer.history) >= 2
    assert {h["phase"] for h in scorer.history} <= {"start", "features", "ranker"}

    again = LlaraLastFMScorer(_tiny(), encoder=_HashEncoder())
    again.fit(data)
    assert np.array_equal(again.score([list(r.history) for r in data.eval_rows], cands), scores)


def test_ablations_run(data_dir):
    data = load_lastfm(data_dir)
    for config in (
        _tiny(use_transformer=False, features=("cos_sum", "log_pop")),
        _tiny(curriculum=False, behavior="als", text_only_eval=True, epochs=1),
        _tiny(cross_fit=False, folds=3, tail_positions=None, n_negatives=9),
        _tiny(ensemble=2, tail_positions=3, epochs=1),
    ):
        scorer = LlaraLastFMScorer(config, encoder=_HashEncoder())
        scorer.fit(data)
        assert len(scorer.rankers) == config.ensemble
        assert {h["ranker"] for h in scorer.history} == set(range(config.ensemble))
        scores, cands, targets = _eval(scorer, data)
        assert np.isfinite(scores).all()
        assert hit_ratio_at_1(scores, cands, targets) > 0.15
    with pytest.raises(ValueError, match="cos_sum"):
        LlaraLastFMScorer(_tiny(features=("als",)))
    with pytest.raises(ValueError, match=r"backbone.*'bert'"):
        LlaraLastFMScorer(_tiny(backbone="bert"))


def test_minilm_backbone_trains_lora_adapters_only(data_dir):
    """llara++/minilm: MiniLM's pretrained layers stay as they are, LoRA adapters learn."""
    import torch
    from safetensors.torch import load_file

    from llarapp.text import model_path

    assert "llara++/minilm" in SCORERS
    minilm = SCORERS["llara++/minilm"]().config
    assert minilm.backbone == "minilm" and minilm.ensemble == 1
    data = load_lastfm(data_dir)
    scorer = LlaraLastFMScorer(
        _tiny(backbone="minilm", num_hidden_layers=1, feature_epochs=1, epochs=1, patience=1),
        encoder=_HashEncoder(),
    )
    scorer.fit(data)
    scores, cands, targets = _eval(scorer, data)
    assert np.isfinite(scores).all() and hit_ratio_at_1(scores, cands, targets) > 0.15
    layer = scorer.model.model.layers[0]
    pretrained = load_file(str(model_path() / "model.safetensors"))
    query = layer.attention.self.query
    assert torch.equal(
        query.base_layer.weight, pretrained["encoder.layer.0.attention.self.query.weight"]
    )
    assert (
        not query.base_layer.weight.requires_grad and query.lora_A["default"].weight.requires_grad
    )
    trained = [h for h in scorer.history if h["phase"] == "ranker"]
    assert trained and np.isfinite(trained[0]["loss"])


def test_examples_and_negatives_follow_the_protocol(data_dir):
    data = load_lastfm(data_dir)
    seqs = user_sequences(data.train)
    hist, lengths, targets = sequence_examples(seqs, PAD)
    assert len(hist) == sum(len(s) - 3 for s in seqs)
    tail, _, tail_targets = sequence_examples(seqs, PAD, tail=2)
    assert len(tail) == sum(min(2, len(s) - 3) for s in seqs)
    assert tail_targets[1::2].tolist() == [s[-1] for s in seqs]  # every user has >= 5 items
    assert lengths.min() == 3 and lengths.max() == WIDTH
    assert ((hist == PAD).sum(axis=1) == WIDTH - lengths).all()
    cands = sample_candidates(hist, targets, N_ITEMS, np.random.default_rng(0))
    assert cands.shape == (len(hist), 20) and (cands[:, 0] == targets).all()
    for h, n, c in zip(hist, lengths, cands, strict=True):
        assert len(set(c.tolist())) == 20
        assert not set(c[1:].tolist()) & set(h[:n].tolist())
        assert c.max() < N_ITEMS


def test_features_are_finite_and_cos_sum_matches_the_baseline(data_dir):
    data = load_lastfm(data_dir)
    scorer = LlaraLastFMScorer(_tiny(epochs=0, feature_epochs=0), encoder=_HashEncoder())
    scorer.fit(data)
    histories = [list(r.history) for r in data.eval_rows]
    cands = candidate_sets(data.eval_rows, data.n_items, 0)
    hist = np.full((len(histories), WIDTH), PAD)
    lengths = np.array([len(h) for h in histories])
    for i, h in enumerate(histories):
        hist[i, : len(h)] = h
    feats = scorer.stats.features(hist, lengths, cands)
    assert feats.shape == (len(histories), 20, len(FEATURES)) and np.isfinite(feats).all()
    baseline = SCORERS["cooccurrence_cosine"]()
    baseline.fit(data)
    expected = baseline.score(histories, cands)
    np.testing.assert_allclose(feats[..., FEATURES.index("cos_sum")], expected, rtol=1e-5)
    # untrained (epochs 0): the score is the co-occurrence baseline's, up to a positive scale
    scores = scorer.score(histories, cands)
    scale = scores.ravel() @ expected.ravel() / (expected.ravel() @ expected.ravel())
    assert scale > 0
    np.testing.assert_allclose(scores, scale * expected, rtol=1e-4, atol=1e-6)


def test_run_lastfm_includes_it(data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(run, "SCORERS", dict(SCORERS))
    run.SCORERS["llara++"] = lambda: LlaraLastFMScorer(_tiny(), encoder=_HashEncoder())
    result = run_lastfm(data_dir, "val", None, seeds=2, scorers=["llara++"])
    assert result["models"]["llara++"]["hr@1"] > 0.5
    assert result["mpd"] is None and "mpd_artists" not in result["models"]["llara++"]
    mpd = _write_mpd(tmp_path / "mpd", [["Artist 1", "artist 2"], ["Artist 2", "Nobody"]])
    result = run_lastfm(data_dir, "val", None, seeds=1, scorers=["llara++"], mpd=mpd)
    assert result["mpd"] == str(mpd) and result["models"]["llara++"]["mpd_artists"] == 2


def _write_mpd(folder, playlists: list[list[str]]):
    folder.mkdir()
    doc = {
        "info": {},
        "playlists": [
            {"pid": i, "name": f"p{i}", "tracks": [{"artist_name": a} for a in artists]}
            for i, artists in enumerate(playlists)
        ],
    }
    (folder / "mpd.slice.0-999.json").write_text(json.dumps(doc))
    return folder


def test_mpd_cooccurrence_matches_names_case_folded(tmp_path):
    names = {0: "Air", 1: "Björk", 2: "Loscil", 3: "Unheard"}
    folder = _write_mpd(tmp_path / "mpd", [["air", "BJÖRK", "Björk"], ["Air", "Loscil"], ["x"]])
    table, covered = mpd_artist_cosine(folder, names)
    assert covered == 3 and table.shape == (5, 4)
    np.testing.assert_allclose(table[0, 1], 1 / np.sqrt(2 * 1))  # Air: 2 playlists, Björk: 1
    np.testing.assert_allclose(table[:4], table[:4].T)
    assert table[1, 2] == 0 and not table[3].any() and not table[4].any()
    assert not np.diag(table[:4]).any()


def test_mpd_features_join_the_ranker(data_dir, tmp_path):
    data = load_lastfm(data_dir)
    ring = [[f"Artist {(i + d) % N_ITEMS}" for d in range(4)] for i in range(0, N_ITEMS, 2)]
    scorer = LlaraLastFMScorer(
        _tiny(mpd=_write_mpd(tmp_path / "mpd", ring), epochs=1), encoder=_HashEncoder()
    )
    scorer.fit(data)
    assert scorer.mpd_artists == N_ITEMS
    assert scorer.model.config.n_features == len(FEATURES) + len(MPD_FEATURES)
    scores, cands, targets = _eval(scorer, data)
    assert np.isfinite(scores).all() and hit_ratio_at_1(scores, cands, targets) > 0.5
