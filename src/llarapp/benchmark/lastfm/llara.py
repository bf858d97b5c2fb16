"""LLaRA++ on LLaRA's LastFM protocol: a feature-aware LLaRA-style ranker over 20 candidates.

Data contract. :meth:`LlaraLastFMScorer.fit` reads only ``data.train`` (the training users'
prefix rows, rebuilt into full sequences by
:func:`~llarapp.benchmark.lastfm.data.user_sequences`),
``data.names`` (artist names, the item text) and ``data.n_items``; it never reads
``data.eval_rows``. :meth:`LlaraLastFMScorer.score` takes histories (lists of item ids, oldest
first; the last :attr:`LlaraLastFMConfig.max_history` are used) and a ``(n_rows, n_candidates)``
array of candidate ids, and returns float64 scores of that shape, higher is better.

Design (LLaRA, Liao et al. SIGIR 2024, adapted to a compact ranker over sequences):

1. *Behavior statistics.* The training users are split, seeded, into A (``1 - b_fraction``) and
   B. Fitted on A only (:class:`BehaviorStats`): item-item co-occurrence cosine (as the
   ``cooccurrence_cosine`` scorer), transition counts ``h -> c`` (``c`` within the next
   ``window`` and ``long_window`` positions after ``h``, cosine-normalised), implicit ALS item
   factors (scored by an exact fold-in of the history) and log popularity.
2. *Ranker examples.* Each position ``t >= 3`` of a B user's sequence is an example: the up-to-10
   previous items are the history, item ``t`` the target, and 19 negatives are drawn uniformly
   from the items outside the history and the target (the evaluation's draw), afresh every
   epoch. Examples are weighted ``n_user ** -user_weight_power`` (the evaluation has one row
   per user; long users would otherwise dominate). Each candidate gets scalar features
   (:data:`FEATURES`): co-occurrence cosine with the history (sum, last item, max, share of
   co-occurring history items), transitions (sum, last item; both windows), ALS fold-in score,
   MiniLM text similarity of the artist names (mean history vector, max), log popularity and its
   gap to the last / mean history item; each standardised with its mean / std over the training
   examples (``cos_sum`` only scaled).
3. *Ranker.* :class:`~llarapp.models.llara.LlaraForCandidateScoring` reads a masked title
   token, one hybrid item token per history item (MiniLM name vector ⊕ behavior vector) and its
   QUERY token; candidates are hybrid item tokens plus the features. An item's behavior vector is
   its ALS factors ⊕ a rank-``transition_factors`` SVD embedding of the long-window transition
   matrix (out ⊕ in halves), rotated by orthogonal Procrustes into the basis of the A fit, so
   vectors refitted on other users keep the meaning the ranker learned. ``feature_head`` starts
   as the co-occurrence-cosine score alone (its temperature fitted by a line search) and the
   candidate MLP's output layer at zero, so the ranker starts exactly at that baseline. Phase 1
   trains the feature head alone (``feature_epochs``); phase 2 trains the whole model with
   LLaRA's curriculum: each batch uses hybrid tokens with probability rising linearly from 0 to
   1 over the first ``curriculum_epochs`` epochs, text-only tokens otherwise. Listwise softmax
   loss, AdamW, the state with the best (weighted) HR@1 on a held-out slice of the B users is
   kept; evaluation rows are never used.
4. *Scoring.* The statistics are refitted on all training users (A and B); the trained ranker
   scores with hybrid tokens.

Caveat (measured on training users only): in this data every user's sequence follows one global
item order (each item pair seen in several users comes in the same order in all of them), so the
transition features, which read that order, carry most of the gain on held-out training users.

Everything is seeded (``seed``); torch's global RNG state and thread count are left as they were.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from scipy import sparse

from llarapp.benchmark.lastfm.data import (
    LastFMData,
    pad_histories,
    user_item_matrix,
    user_sequences,
)
from llarapp.benchmark.lastfm.scorers import torch_threads
from llarapp.training.llara import p_hybrid
from llarapp.training.stage import procrustes

log = logging.getLogger(__name__)

#: Candidate features, in column order.
FEATURES = (
    "cos_sum",
    "cos_last",
    "cos_max",
    "cos_share",
    "trans_sum",
    "trans_last",
    "trans_long_sum",
    "trans_long_last",
    "als",
    "text_mean",
    "text_max",
    "log_pop",
    "pop_gap_last",
    "pop_absgap_last",
    "pop_gap_mean",
    "pop_absgap_mean",
)
#: The feature the ranker starts from (the ``cooccurrence_cosine`` baseline's score).
BASE_FEATURE = FEATURES.index("cos_sum")
MIN_HISTORY = 3
#: Choices of :attr:`LlaraLastFMConfig.behavior`.
BEHAVIORS = ("als", "transitions", "als+transitions")


class _Encoder(Protocol):
    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass
class LlaraLastFMConfig:
    """Settings of :class:`LlaraLastFMScorer` (defaults chosen on held-out training users).

    Attributes:
        b_fraction: Share of the training users whose positions become ranker examples (B).
        holdout_fraction: Share of the B users held out to select the epoch.
        max_history: History items read (the data's window is 10).
        window: Short transition window: ``h -> c`` counts when ``c`` follows ``h`` within this
            many positions.
        long_window: Long transition window (features ``trans_long_*`` and the SVD embedding).
        behavior: Behavior vector of an item token: ``"als"``, ``"transitions"`` or
            ``"als+transitions"`` (concatenated).
        transition_factors: Rank of the transition SVD (the embedding has twice this size).
        als_factors: ALS factors.
        als_regularization: ALS L2 regularisation.
        als_alpha: ALS confidence of an observed (user, item).
        als_iterations: ALS sweeps.
        features: Names of the features fed to the ranker (a subset of :data:`FEATURES` that
            holds ``cos_sum``).
        use_transformer: False keeps only phase 1, the feature head (an ablation).
        user_weight_power: Example weight ``n_user ** -power`` (0: positions equal, 1: users
            equal), in the loss and the held-out HR@1.
        curriculum: True ramps the hybrid-token probability 0 -> 1; False always uses hybrid
            tokens.
        curriculum_epochs: Length of the ramp, in epochs of phase 2.
        text_only_eval: Score with text-only tokens (an ablation).
        backbone: ``"decoder"`` (a compact decoder trained from scratch) or ``"minilm"``: the
            ranker's layers are MiniLM's pretrained encoder layers (LLaRA's LLM role), with
            LoRA adapters (``lora_r``); the sizes below then follow MiniLM (hidden 384, 12
            heads), ``num_hidden_layers`` of its 6 layers are used.
        lora_r: LoRA rank on the MiniLM layers' linear maps; 0 fine-tunes all their weights.
        hidden_size: Ranker width.
        num_hidden_layers: Decoder blocks (MiniLM layers with ``backbone="minilm"``).
        num_attention_heads: Query heads.
        num_key_value_heads: Key / value heads.
        intermediate_size: SwiGLU width.
        dropout: Hidden dropout.
        feature_epochs: Phase-1 epochs (feature head alone).
        feature_lr: Phase-1 learning rate.
        epochs: Phase-2 epochs (whole model).
        patience: Phase-2 epochs without a better held-out HR@1 before stopping.
        batch_size: Examples per step.
        lr: Phase-2 AdamW learning rate.
        head_lr_scale: Phase-2 learning rate of the feature head, relative to ``lr``.
        weight_decay: Phase-2 AdamW weight decay (not on the feature head).
        seed: Seed of the user split, negatives, ALS, SVD and torch.
        threads: Torch intra-op threads while fitting / scoring (None: leave as is).
        text_cache_dir: Cache folder of the MiniLM vectors; ``"default"`` is the project's
            cache (``llarapp.text.default_cache_dir()``), None disables it.
    """

    b_fraction: float = 0.25
    holdout_fraction: float = 0.2
    max_history: int = 10
    window: int = 3
    long_window: int = 20
    behavior: str = "als+transitions"
    transition_factors: int = 16
    als_factors: int = 32
    als_regularization: float = 0.1
    als_alpha: float = 10.0
    als_iterations: int = 15
    features: tuple[str, ...] = FEATURES
    use_transformer: bool = True
    user_weight_power: float = 0.5
    curriculum: bool = True
    curriculum_epochs: float = 1.0
    text_only_eval: bool = False
    backbone: str = "decoder"
    lora_r: int = 8
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    dropout: float = 0.1
    feature_epochs: int = 5
    feature_lr: float = 1e-2
    epochs: int = 6
    patience: int = 6
    batch_size: int = 128
    lr: float = 3e-3
    head_lr_scale: float = 1.0
    weight_decay: float = 0.01
    seed: int = 0
    threads: int | None = 1
    text_cache_dir: str | Path | None = "default"


# ------------------------------------------------------------------------------ statistics


class BehaviorStats:
    """Item statistics of a set of user sequences, and the candidate features they give.

    Args:
        seqs: Full item sequences of the users the statistics are fitted on.
        n_items: Number of items (ids ``0..n_items-1``; ``n_items`` is the padding id).
        text: ``(n_items, text_dim)`` L2-normalised item text vectors.
        config: Window and ALS settings.
        seed: ALS seed.
    """

    def __init__(
        self,
        seqs: Sequence[Sequence[int]],
        n_items: int,
        text: np.ndarray,
        config: LlaraLastFMConfig,
        seed: int,
    ) -> None:
        self.n_items = n_items
        n = n_items
        X = user_item_matrix(seqs, n, np.float32)
        users = np.asarray(X.sum(axis=0)).ravel()
        inv = (1.0 / np.sqrt(np.maximum(users, 1.0))).astype(np.float32)

        # Dense (n + 1, n) tables: the extra, all-zero row is the padding id's.
        C = (X.T @ X).toarray()
        np.fill_diagonal(C, 0.0)
        self.cos = np.zeros((n + 1, n), dtype=np.float32)
        self.cos[:n] = C * inv[:, None] * inv[None, :]
        del C

        self.trans = _transitions(seqs, n, config.window, inv)
        self.trans_long = _transitions(seqs, n, config.long_window, inv)

        self.log_pop = np.log1p(users) - np.log(max(len(seqs), 1))
        self.text = np.vstack([text, np.zeros((1, text.shape[1]), dtype=np.float32)])
        self.item_factors = self._als(X, config, seed)
        f = self.item_factors.shape[1]
        Y = self.item_factors.astype(np.float64)
        self._gram = Y.T @ Y + config.als_regularization * np.eye(f)
        self._alpha = config.als_alpha
        parts = []
        if "als" in config.behavior:
            parts.append(self.item_factors)
        if "transitions" in config.behavior:
            parts.append(_svd_embeddings(self.trans_long[:n], config.transition_factors, seed))
        self.behavior = np.hstack(parts).astype(np.float32)

    @staticmethod
    def _als(X: sparse.csr_matrix, config: LlaraLastFMConfig, seed: int) -> np.ndarray:
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=config.als_factors,
                regularization=config.als_regularization,
                alpha=config.als_alpha,
                iterations=config.als_iterations,
                random_state=seed,
                num_threads=1,
            )
            model.fit(X, show_progress=False)
        return np.asarray(model.item_factors, dtype=np.float32)

    def fold_in(self, hist: np.ndarray) -> np.ndarray:
        """ALS user vectors ``(m, factors)`` of padded histories ``(m, L)`` (exact fold-in)."""
        Y = np.vstack([self.item_factors, np.zeros((1, self.item_factors.shape[1]))]).astype(
            np.float64
        )
        Yh = Y[hist]  # (m, L, f); the padding row is zero, so it adds nothing
        A = self._gram[None] + (self._alpha - 1.0) * np.einsum("mlf,mlg->mfg", Yh, Yh)
        b = self._alpha * Yh.sum(axis=1)
        return np.linalg.solve(A, b[..., None])[..., 0]

    def features(self, hist: np.ndarray, lengths: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """Raw candidate features ``(m, N, len(FEATURES))`` (float32, columns as FEATURES).

        Args:
            hist: ``(m, L)`` histories, right-padded with ``n_items``.
            lengths: ``(m,)`` history lengths (>= 1).
            cands: ``(m, N)`` candidate ids.
        """
        m = len(hist)
        rows = np.arange(m)
        last = hist[rows, lengths - 1]  # (m,)
        valid = (hist < self.n_items)[:, :, None]  # (m, L, 1)
        k = lengths[:, None].astype(np.float32)
        cos = self.cos[hist[:, :, None], cands[:, None, :]]  # (m, L, N)
        text_h = self.text[hist]  # (m, L, d)
        sims = np.einsum("mld,mnd->mln", text_h, self.text[cands])  # (m, L, N)
        sims = np.where(valid, sims, -1.0)
        mean_text = text_h.sum(axis=1) / k
        mean_text /= np.maximum(np.linalg.norm(mean_text, axis=1, keepdims=True), 1e-6)
        user = self.fold_in(hist)  # (m, f)
        pop = self.log_pop[cands]  # (m, N)
        pop_h = np.where(valid[..., 0], self.log_pop[np.minimum(hist, self.n_items - 1)], 0.0)
        gap_last = pop - self.log_pop[last][:, None]
        gap_mean = pop - (pop_h.sum(axis=1) / lengths)[:, None]
        columns = {
            "cos_sum": cos.sum(axis=1),
            "cos_last": self.cos[last[:, None], cands],
            "cos_max": cos.max(axis=1),
            "cos_share": (cos > 0).sum(axis=1) / k,
            "trans_sum": self.trans[hist[:, :, None], cands[:, None, :]].sum(axis=1),
            "trans_last": self.trans[last[:, None], cands],
            "trans_long_sum": self.trans_long[hist[:, :, None], cands[:, None, :]].sum(axis=1),
            "trans_long_last": self.trans_long[last[:, None], cands],
            "als": np.einsum("mf,mnf->mn", user, self.item_factors[cands]),
            "text_mean": np.einsum("md,mnd->mn", mean_text, self.text[cands]),
            "text_max": sims.max(axis=1),
            "log_pop": pop,
            "pop_gap_last": gap_last,
            "pop_absgap_last": np.abs(gap_last),
            "pop_gap_mean": gap_mean,
            "pop_absgap_mean": np.abs(gap_mean),
        }
        out = np.empty((m, cands.shape[1], len(FEATURES)), dtype=np.float32)
        for j, name in enumerate(FEATURES):
            out[..., j] = columns[name]
        return out


def _transitions(seqs: Sequence[Sequence[int]], n: int, window: int, inv: np.ndarray) -> np.ndarray:
    """Dense ``(n + 1, n)`` cosine-normalised counts of ``c`` following ``h`` within ``window``
    positions (``inv`` = 1 / sqrt(users of each item)); the last row (padding) is zero."""
    rows, cols = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for s in seqs:
        s = np.asarray(s, dtype=np.int64)
        for d in range(1, min(window, len(s) - 1) + 1):
            rows.append(s[:-d])
            cols.append(s[d:])
    r, c = np.concatenate(rows), np.concatenate(cols)
    T = sparse.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(n, n)).toarray()
    np.fill_diagonal(T, 0.0)
    out = np.zeros((n + 1, n), dtype=np.float32)
    out[:n] = T * inv[:, None] * inv[None, :]
    return out


def _svd_embeddings(matrix: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``[U sqrt(S), V sqrt(S)]`` of the rank-``k`` SVD of ``matrix``: ``(n, 2k)`` item vectors
    whose out-half · in-half approximates ``matrix`` (where an item leads to / comes from)."""
    from scipy.sparse.linalg import svds

    k = max(1, min(k, min(matrix.shape) - 2))
    v0 = np.random.default_rng(seed).standard_normal(min(matrix.shape))
    u, sv, vt = svds(sparse.csr_matrix(matrix), k=k, v0=v0)
    root = np.sqrt(sv)
    return np.hstack([u * root, vt.T * root]).astype(np.float32)


# ------------------------------------------------------------------------------- examples


def sequence_examples(
    seqs: Sequence[Sequence[int]], pad_id: int, max_history: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every position ``t >= 3`` of each sequence as an example.

    Returns:
        ``(hist, lengths, targets)``: ``(m, max_history)`` right-padded histories (the up-to
        ``max_history`` items before ``t``), ``(m,)`` lengths, ``(m,)`` targets.
    """
    hist, lengths, targets = [], [], []
    for s in seqs:
        for t in range(MIN_HISTORY, len(s)):
            h = list(s[max(0, t - max_history) : t])
            hist.append(h + [pad_id] * (max_history - len(h)))
            lengths.append(len(h))
            targets.append(s[t])
    return (
        np.array(hist, dtype=np.int64).reshape(-1, max_history),
        np.array(lengths, dtype=np.int64),
        np.array(targets, dtype=np.int64),
    )


def example_weights(seqs: Sequence[Sequence[int]], power: float) -> np.ndarray:
    """Weight of each :func:`sequence_examples` example: ``n_user ** -power`` (``n_user`` = the
    user's examples), scaled to mean 1. ``power`` 0 weighs positions equally, 1 weighs users
    equally (the evaluation's one row per user)."""
    counts = [len(s) - MIN_HISTORY for s in seqs if len(s) > MIN_HISTORY]
    w = np.concatenate([np.full(n, float(n) ** -power) for n in counts] or [np.zeros(0)])
    return w / max(float(w.mean()), 1e-12) if len(w) else w


def sample_candidates(
    hist: np.ndarray, targets: np.ndarray, n_items: int, rng: np.random.Generator, n: int = 20
) -> np.ndarray:
    """``(m, n)`` candidates: the target in column 0, then ``n - 1`` distinct negatives drawn
    uniformly from the items outside the history and the target (the protocol's draw)."""
    m = len(hist)
    out = np.empty((m, n), dtype=np.int64)
    out[:, 0] = targets
    todo = np.arange(m)
    while len(todo):
        draws = rng.integers(0, n_items, size=(len(todo), 2 * n))
        bad = (draws[:, :, None] == hist[todo][:, None, :]).any(axis=2)
        bad |= draws == targets[todo][:, None]
        # keep the first occurrence of each value, in draw order
        order = np.argsort(draws, axis=1, kind="stable")
        sorted_draws = np.take_along_axis(draws, order, axis=1)
        first = np.ones_like(bad)
        first[:, 1:] = sorted_draws[:, 1:] != sorted_draws[:, :-1]
        keep = np.empty_like(first)
        np.put_along_axis(keep, order, first, axis=1)
        keep &= ~bad
        ok = keep.sum(axis=1) >= n - 1
        idx = np.argsort(~keep, axis=1, kind="stable")[:, : n - 1]
        chosen = np.take_along_axis(draws, idx, axis=1)
        out[todo[ok], 1:] = chosen[ok]
        todo = todo[~ok]
    return out


# --------------------------------------------------------------------------------- scorer


class LlaraLastFMScorer:
    """LLaRA++ ranker for the LastFM protocol (see the module docstring).

    Args:
        config: Settings; the defaults are the benchmarked ones.
        encoder: Text encoder with ``encode(list[str]) -> (n, 384)`` L2-normalised vectors;
            None builds :class:`llarapp.text.TextEncoder` on ``config.text_cache_dir``.
    """

    name = "llara++"

    def __init__(
        self, config: LlaraLastFMConfig | None = None, encoder: _Encoder | None = None
    ) -> None:
        self.config = config or LlaraLastFMConfig()
        self.encoder = encoder
        self.model = None
        self.stats: BehaviorStats | None = None
        self.history: list[dict] = []
        self.best_holdout_hr1: float | None = None
        self._best: tuple[float, dict] = (float("-inf"), {})
        self.seconds: dict[str, float] = {}
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        self._rotation: np.ndarray | None = None
        self._reference: np.ndarray | None = None
        self._cols = [FEATURES.index(f) for f in self.config.features]
        if "cos_sum" not in self.config.features:
            raise ValueError("config.features must hold 'cos_sum' (the ranker's starting score)")
        if self.config.backbone not in ("decoder", "minilm"):
            raise ValueError(
                f"config.backbone must be 'decoder' or 'minilm', got {self.config.backbone!r}"
            )
        if self.config.behavior not in BEHAVIORS:
            raise ValueError(
                f"config.behavior must be one of {BEHAVIORS}, got {self.config.behavior!r}"
            )

    # -- helpers ---------------------------------------------------------------------------

    def _text_vectors(self, data: LastFMData) -> np.ndarray:
        encoder = self.encoder
        if encoder is None:
            from llarapp.text import TextEncoder, default_cache_dir

            cache = self.config.text_cache_dir
            cache = default_cache_dir() if cache == "default" else cache
            encoder = TextEncoder(cache, progress=False)
        vectors = encoder.encode([data.names[i] for i in range(data.n_items)])
        return np.asarray(vectors, dtype=np.float32)

    def _behavior(self, stats: BehaviorStats) -> np.ndarray:
        """``(n_items + 1, f)`` behavior vectors in the reference basis (zero padding row)."""
        factors = stats.behavior
        rotation = procrustes(factors.astype(np.float64), self._reference.astype(np.float64))
        out = np.zeros((stats.n_items + 1, factors.shape[1]), dtype=np.float32)
        out[:-1] = factors @ rotation
        out[:-1] /= max(float(np.sqrt((out[:-1] ** 2).sum(axis=1).mean())), 1e-6)
        return out

    def _features(
        self, stats: BehaviorStats, hist: np.ndarray, lengths: np.ndarray, cands: np.ndarray
    ):
        """Standardised ``(m, N, n_features)`` float32 tensor of the configured features."""
        import torch

        feats = stats.features(hist, lengths, cands)[..., self._cols]
        feats = (feats - self._mean) / self._std
        return torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))

    def _inputs(
        self,
        stats: BehaviorStats,
        behavior: np.ndarray,
        hist: np.ndarray,
        lengths: np.ndarray,
        cands: np.ndarray,
        hybrid: float,
    ) -> dict:
        import torch

        feats = self._features(stats, hist, lengths, cands)
        m, n = cands.shape
        text = stats.text
        t = torch.from_numpy
        return {
            "title_vec": torch.zeros(m, text.shape[1]),
            "title_mask": torch.zeros(m),
            "seed_text": t(text[hist]),
            "seed_behavior": t(behavior[hist]),
            "seed_use_behavior": torch.full(hist.shape, float(hybrid)),
            "seed_mask": t((hist < stats.n_items).astype(np.float32)),
            "cand_text": t(text[cands]),
            "cand_behavior": t(behavior[cands]),
            "cand_use_behavior": torch.full((m, n), float(hybrid)),
            "cand_features": feats,
            "cand_mask": torch.ones(m, n),
        }

    def _build(self, behavior_dim: int, text_dim: int):
        from llarapp.models.llara import LlaraConfig, LlaraForCandidateScoring

        c = self.config
        sizes = {
            "hidden_size": c.hidden_size,
            "num_attention_heads": c.num_attention_heads,
            "num_key_value_heads": c.num_key_value_heads,
            "intermediate_size": c.intermediate_size,
        }
        if c.backbone == "minilm":
            from llarapp.models.llara import load_minilm_backbone, minilm_backbone_config
            from llarapp.text import model_path

            backbone = minilm_backbone_config(model_path())
            sizes = {
                "hidden_size": backbone["hidden_size"],
                "num_attention_heads": backbone["num_attention_heads"],
                "num_key_value_heads": backbone["num_attention_heads"],
                "intermediate_size": backbone["intermediate_size"],
                "backbone": "minilm",
                "backbone_config": backbone,
            }
        config = LlaraConfig(
            text_dim=text_dim,
            behavior_dim=behavior_dim,
            num_hidden_layers=c.num_hidden_layers,
            max_position_embeddings=c.max_history + 2,
            n_features=len(self._cols),
            hidden_dropout=c.dropout,
            **sizes,
        )
        model = LlaraForCandidateScoring(config)
        if c.backbone == "minilm":
            load_minilm_backbone(model.model, model_path())
            _freeze_backbone(model, c.lora_r)
        return model

    def _scores(
        self,
        model,
        stats: BehaviorStats,
        behavior: np.ndarray,
        hist: np.ndarray,
        lengths: np.ndarray,
        cands: np.ndarray,
        hybrid: float = 1.0,
        full: bool = True,
    ) -> np.ndarray:
        """Scores ``(m, N)`` in chunks; ``full=False`` uses the feature head alone."""
        import torch

        out = np.empty(cands.shape, dtype=np.float64)
        with torch.no_grad():
            for a in range(0, len(hist), 512):
                sl = slice(a, a + 512)
                if full:
                    inputs = self._inputs(stats, behavior, hist[sl], lengths[sl], cands[sl], hybrid)
                    s = model(**inputs, return_dict=True).scores
                else:
                    s = model.feature_head(self._features(stats, hist[sl], lengths[sl], cands[sl]))
                    s = s[..., 0]
                out[sl] = s.double().numpy()
        return out

    # -- fit / score -----------------------------------------------------------------------

    def fit(self, data: LastFMData) -> None:
        """Fit statistics on A, train the ranker on B, refit statistics on all users."""
        import torch

        c = self.config
        start = time.perf_counter()
        rng = np.random.default_rng(c.seed)
        seqs = user_sequences(data.train)
        text = self._text_vectors(data)
        self.seconds["text"] = time.perf_counter() - start

        order = rng.permutation(len(seqs))
        n_b = max(2, round(c.b_fraction * len(seqs)))
        b_users, a_users = order[:n_b], order[n_b:]
        n_hold = max(1, round(c.holdout_fraction * n_b))
        hold_users, train_users = b_users[:n_hold], b_users[n_hold:]
        stats = BehaviorStats([seqs[i] for i in a_users], data.n_items, text, c, c.seed)
        self._reference = stats.behavior
        behavior = self._behavior(stats)
        self.seconds["stats_a"] = time.perf_counter() - start

        pad = data.n_items
        hist, lengths, targets = sequence_examples(
            [seqs[i] for i in train_users], pad, c.max_history
        )
        h_hist, h_len, h_tgt = sequence_examples([seqs[i] for i in hold_users], pad, c.max_history)
        if len(hist) == 0 or len(h_hist) == 0:
            raise ValueError(
                "too few ranker examples: the B users (and their held-out slice) need sequences "
                f"of >= {MIN_HISTORY + 1} items"
            )
        h_cands = sample_candidates(h_hist, h_tgt, data.n_items, rng)
        weights = example_weights([seqs[i] for i in train_users], c.user_weight_power)
        h_weights = example_weights([seqs[i] for i in hold_users], c.user_weight_power)

        # feature scaling from one draw of training candidates
        cands0 = sample_candidates(hist, targets, data.n_items, rng)
        f0 = np.concatenate(
            [
                stats.features(hist[a : a + 2048], lengths[a : a + 2048], cands0[a : a + 2048])
                for a in range(0, len(hist), 2048)
            ]
        )[..., self._cols].reshape(-1, len(self._cols))
        self._mean = f0.mean(axis=0).astype(np.float32)
        self._std = np.maximum(f0.std(axis=0), 1e-6).astype(np.float32)
        self._mean[self._cols.index(BASE_FEATURE)] = 0.0  # keep cos_sum = 0 meaning "no signal"
        base = f0[:, self._cols.index(BASE_FEATURE)] / self._std[self._cols.index(BASE_FEATURE)]
        base = base.reshape(cands0.shape)
        temperature = _fit_temperature(base)
        del f0

        train = (stats, behavior, hist, lengths, targets, weights)
        holdout = (stats, behavior, h_hist, h_len, h_cands)
        with torch_threads(self.config.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.seed)
            model = self._build(behavior.shape[1], text.shape[1])
            with torch.no_grad():
                model.feature_head.weight.zero_()
                model.feature_head.bias.zero_()
                model.feature_head.weight[0, self._cols.index(BASE_FEATURE)] = temperature
                model.cand_head.fc2.weight.zero_()  # the transformer term starts at exactly 0
                model.cand_head.fc2.bias.zero_()
            model.eval()
            start_hr = _hr1(self._scores(model, *holdout, full=False), h_weights)
            self._best = (start_hr, {k: v.clone() for k, v in model.state_dict().items()})
            self.history = [
                {"phase": "start", "epoch": 0, "holdout_hr1": self._best[0], "loss": float("nan")}
            ]
            log.info("llara++ start (cos_sum only): held-out HR@1 %.4f", self._best[0])
            head = list(model.feature_head.parameters())
            opt = torch.optim.AdamW(head, lr=c.feature_lr, weight_decay=0.0)
            self._train_phase(
                "features", model, opt, train, (holdout, h_weights), c.feature_epochs, rng
            )
            if c.use_transformer and c.epochs > 0:
                model.load_state_dict(self._best[1])
                head_ids = {id(p) for p in head}
                rest = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
                opt = torch.optim.AdamW(
                    [
                        {"params": rest, "weight_decay": c.weight_decay},
                        {"params": head, "weight_decay": 0.0, "lr": c.lr * c.head_lr_scale},
                    ],
                    lr=c.lr,
                )
                self._train_phase("ranker", model, opt, train, (holdout, h_weights), c.epochs, rng)
            model.load_state_dict(self._best[1])
            model.eval()
        self.best_holdout_hr1 = self._best[0]
        self._best = (self._best[0], {})
        self.seconds["train"] = time.perf_counter() - start
        del stats, train, holdout  # free the A tables before building the full ones

        self.stats = BehaviorStats(seqs, data.n_items, text, c, c.seed)
        self._behavior_all = self._behavior(self.stats)
        self.model = model
        self.seconds["total"] = time.perf_counter() - start

    def _train_phase(
        self,
        phase: str,
        model,
        opt,
        train: tuple,
        holdout: tuple,
        epochs: int,
        rng: np.random.Generator,
    ) -> None:
        """Train for up to ``epochs`` epochs, keeping the best held-out state in ``self._best``.

        ``phase`` ``"features"`` trains the feature head alone on the feature-only score;
        ``"ranker"`` trains the whole model with the hybrid-token curriculum. Stops after
        ``patience`` epochs without a better held-out HR@1.
        """
        import torch

        c = self.config
        full = phase == "ranker"
        stats, behavior, hist, lengths, targets, weights = train
        holdout, h_weights = holdout
        ramp = c.curriculum_epochs * -(-len(hist) // c.batch_size)
        curriculum = "linear" if c.curriculum else "none"
        bad, step = 0, 0
        for epoch in range(1, epochs + 1):
            model.train()
            cands = sample_candidates(hist, targets, stats.n_items, rng)
            perm = rng.permutation(len(hist))
            total = 0.0
            for a in range(0, len(perm), c.batch_size):
                idx = perm[a : a + c.batch_size]
                hybrid = float(rng.random() < p_hybrid(curriculum, step, ramp))
                if full:
                    inputs = self._inputs(
                        stats, behavior, hist[idx], lengths[idx], cands[idx], hybrid
                    )
                    scores = model(**inputs, return_dict=True).scores
                else:
                    feats = self._features(stats, hist[idx], lengths[idx], cands[idx])
                    scores = model.feature_head(feats)[..., 0]
                w = torch.from_numpy(weights[idx].astype(np.float32))
                nll = -torch.log_softmax(scores, dim=-1)[:, 0]  # the target is column 0
                loss = (w * nll).sum() / w.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                step += 1
            model.eval()
            hr = _hr1(self._scores(model, *holdout, full=full), h_weights)
            loss = total / len(perm)
            self.history.append({"phase": phase, "epoch": epoch, "holdout_hr1": hr, "loss": loss})
            log.info("llara++ %s epoch %d: loss %.4f held-out HR@1 %.4f", phase, epoch, loss, hr)
            if hr > self._best[0]:
                bad = 0
                self._best = (hr, {k: v.clone() for k, v in model.state_dict().items()})
            else:
                bad += 1
                if bad >= c.patience:
                    break

    def score(self, histories: list[list[int]], candidates: np.ndarray) -> np.ndarray:
        """``(n_rows, n_candidates)`` float64 scores, higher is better."""
        assert self.model is not None and self.stats is not None, "fit first"
        hist, lengths = pad_histories(histories, self.config.max_history, self.stats.n_items)
        hybrid = 0.0 if self.config.text_only_eval else 1.0
        with torch_threads(self.config.threads):
            return self._scores(
                self.model,
                self.stats,
                self._behavior_all,
                hist,
                lengths,
                np.asarray(candidates, dtype=np.int64),
                hybrid,
                full=self.config.use_transformer,
            )


def llara_minilm() -> LlaraLastFMScorer:
    """llara++ whose ranker layers are MiniLM's six pretrained encoder layers with LoRA adapters
    (LLaRA's LLM role) instead of a decoder trained from scratch; every other setting the same."""
    return LlaraLastFMScorer(
        LlaraLastFMConfig(backbone="minilm", num_hidden_layers=6, threads=None)
    )


def _freeze_backbone(model, lora_r: int) -> None:
    """With ``lora_r > 0``: LoRA adapters (peft) on every linear map of the MiniLM layers, whose
    pretrained weights and position embeddings are then frozen; the rest of the ranker (item
    embeddings, QUERY, candidate MLP, feature head) trains in full. ``lora_r == 0`` leaves
    everything trainable (full fine-tuning)."""
    if lora_r <= 0:
        return
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(
        r=lora_r,
        lora_alpha=2 * lora_r,
        lora_dropout=0.0,
        target_modules=["query", "key", "value", "dense"],
    )
    inject_adapter_in_model(lora, model.model.layers)
    for name, param in model.model.layers.named_parameters():
        param.requires_grad_("lora_" in name)
    model.model.position_embeddings.weight.requires_grad_(False)


def _hr1(scores: np.ndarray, weights: np.ndarray | None = None) -> float:
    """(Weighted) HR@1 when the target is column 0 (ties count against it)."""
    return float(np.average(scores[:, 0] > scores[:, 1:].max(axis=1), weights=weights))


def _fit_temperature(base: np.ndarray) -> float:
    """The ``w`` (a coarse grid) minimising the listwise loss of ``w * base`` (target col 0)."""
    best_w, best_loss = 1.0, np.inf
    for w in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0):
        z = w * base
        z = z - z.max(axis=1, keepdims=True)
        loss = float(-(z[:, 0] - np.log(np.exp(z).sum(axis=1))).mean())
        if loss < best_loss:
            best_w, best_loss = w, loss
    return best_w
