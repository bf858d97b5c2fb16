"""LLaRA++ on LLaRA's LastFM protocol: a feature-aware LLaRA-style ranker over 20 candidates.

Data contract. :meth:`LlaraLastFMScorer.fit` reads only ``data.train`` (the training users'
prefix rows, rebuilt into full sequences by
:func:`~llarapp.benchmark.lastfm.data.user_sequences`),
``data.names`` (artist names, the item text) and ``data.n_items``; it never reads
``data.eval_rows``. :meth:`LlaraLastFMScorer.score` takes histories (lists of item ids, oldest
first; the last :attr:`LlaraLastFMConfig.max_history` are used) and a ``(n_rows, n_candidates)``
array of candidate ids, and returns float64 scores of that shape, higher is better.

Design (LLaRA, Liao et al. SIGIR 2024, adapted to a compact ranker over sequences):

1. *Behavior statistics, cross-fitted.* The training users are split, seeded, into ``folds``
   folds; fold ``k``'s statistics (:class:`BehaviorStats`) are fitted on the users of the other
   folds: item-item co-occurrence cosine (as the ``cooccurrence_cosine`` scorer), transition
   counts ``h -> c`` (``c`` within the next ``window`` and ``long_window`` positions after
   ``h``, cosine-normalised), implicit ALS item factors (scored by an exact fold-in of the
   history), log popularity, and where items sit in the sequences (the share of an item's
   occurrences that end a sequence, its mean relative position). So every training user yields
   ranker examples whose features come from statistics that never saw that user
   (``cross_fit=False`` keeps one fold's users as examples: the earlier A/B split).
2. *Ranker examples.* The last ``tail_positions`` positions ``t >= 3`` of each user's sequence
   (all of them when None) are examples: the up-to-10 previous items are the history, item
   ``t`` the target, and ``n_negatives`` negatives are drawn uniformly from the items outside
   the history and the target (the evaluation's draw), afresh every epoch. The protocol's
   target is a user's *last* item, which differs from the middle of a sequence: measured on
   held-out training users, a last item is rarer (median 4 users against 13) and usually one
   that ends sequences, so the last positions are the examples that match it. Examples are
   weighted ``n_user ** -user_weight_power``. Each candidate gets scalar features
   (:data:`FEATURES`): co-occurrence cosine with the history (sum, last item, max, share of
   co-occurring history items), transitions (sum, last item; both windows), ALS fold-in score,
   MiniLM text similarity of the artist names (mean history vector, max), log popularity and its
   gap to the last / mean history item, the end statistics (and the relative-position gap to
   the last history item), and, with ``mpd``, the artists' co-occurrence in MPD playlists
   (:data:`MPD_FEATURES`, :func:`mpd_artist_cosine`); each standardised with its mean / std
   over the training examples (``cos_sum`` only scaled).
3. *Ranker.* :class:`~llarapp.models.llara.LlaraForCandidateScoring` reads a masked title
   token, one hybrid item token per history item (MiniLM name vector ⊕ behavior vector) and its
   QUERY token; candidates are hybrid item tokens plus the features. An item's behavior vector is
   its ALS factors ⊕ a rank-``transition_factors`` SVD embedding of the long-window transition
   matrix (out ⊕ in halves), rotated by orthogonal Procrustes into the basis of fold 0's fit, so
   vectors fitted on other users keep the meaning the ranker learned. ``feature_head`` starts
   as the co-occurrence-cosine score alone (its temperature fitted by a line search) and the
   candidate MLP's output layer at zero, so the ranker starts exactly at that baseline. Phase 1
   trains the feature head alone (``feature_epochs``); phase 2 trains the whole model with
   LLaRA's curriculum: each batch uses hybrid tokens with probability rising linearly from 0 to
   1 over the first ``curriculum_epochs`` epochs, text-only tokens otherwise. Listwise softmax
   loss, AdamW; the state with the best HR@1 on the *last* position of a held-out slice
   (``holdout_fraction``) of the example users is kept; evaluation rows are never used.
4. *Ensemble.* ``ensemble`` rankers are trained as above with seeds ``seed, seed + 1, ...``
   (each its own folds, held-out users, negatives and initialisation); with so few examples
   per user a single ranker's held-out choice is noisy, and the sum of their scores is steadier.
5. *Scoring.* The statistics are refitted on all training users; each ranker scores with hybrid
   tokens (the refitted behavior vectors rotated into its basis) and the scores are summed.

Caveat (measured on training users only): in this data every user's sequence follows one global
item order (each item pair seen in several users comes in the same order in all of them), so the
transition and end features, which read that order, carry most of the gain on held-out training
users.

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
    "last_rate",
    "rel_pos",
    "rel_pos_gap_last",
)
#: Candidate features from MPD playlists (:func:`mpd_artist_cosine`), appended to the configured
#: ones when :attr:`LlaraLastFMConfig.mpd` is set.
MPD_FEATURES = ("mpd_sum", "mpd_max", "mpd_last")
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
        folds: Folds of the training users; each fold's examples get features from
            statistics fitted on the other folds (cross-fitting).
        cross_fit: True: every fold's users give examples. False: only one fold's (a
            ``1 / folds`` share, the A/B split of earlier builds).
        tail_positions: Examples are the last this many positions of each sequence (None:
            every position ``t >= 3``).
        n_negatives: Uniform negatives per training example (the evaluation has 19).
        ensemble: Rankers trained with seeds ``seed, seed + 1, ...``; their scores are summed.
        holdout_fraction: Share of the example users held out to select the epoch (on their
            last position, as the evaluation).
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
        user_weight_power: Example weight ``n_user ** -power`` in the loss (0: positions
            equal, 1: users equal).
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
        seed: Seed of the folds, held-out users, negatives, ALS, SVD and torch (the first
            ranker's; ranker ``m`` uses ``seed + m``).
        threads: Torch intra-op threads while fitting / scoring (None: leave as is).
        text_cache_dir: Cache folder of the MiniLM vectors; ``"default"`` is the project's
            cache (``llarapp.text.default_cache_dir()``), None disables it.
        mpd: MPD playlists (a folder of ``mpd.slice.*.json`` files, a file or a glob) whose
            artist co-occurrence gives the :data:`MPD_FEATURES`; None leaves them out.
    """

    folds: int = 4
    cross_fit: bool = True
    tail_positions: int | None = 3
    n_negatives: int = 19
    ensemble: int = 5
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
    mpd: str | Path | None = None


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
        self.cos = cosine_table(X)

        self.trans = _transitions(seqs, n, config.window, inv)
        self.trans_long = _transitions(seqs, n, config.long_window, inv)

        self.log_pop = np.log1p(users) - np.log(max(len(seqs), 1))
        self.last_rate, self.rel_pos = _end_statistics(seqs, n)
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
            "last_rate": self.last_rate[cands],
            "rel_pos": self.rel_pos[cands],
            "rel_pos_gap_last": self.rel_pos[cands] - self.rel_pos[last][:, None],
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


def mpd_artist_cosine(source: str | Path, names: dict[int, str]) -> tuple[np.ndarray, int]:
    """Artist-artist cosine co-occurrence in MPD playlists, on the LastFM artists.

    An MPD track's ``artist_name`` is matched to a LastFM artist by its case-folded, stripped
    name; a playlist counts once per artist it holds. Returns the dense ``(n + 1, n)`` float32
    table ``playlists(a, b) / sqrt(playlists(a) playlists(b))`` (zero diagonal, padding row
    zero; ``n = len(names)``) and the number of LastFM artists found in at least one playlist.
    """
    import json

    from llarapp.data.ingest import iter_sources, read_source

    n = len(names)
    ids: dict[str, int] = {}
    for item in sorted(names):
        ids.setdefault(names[item].casefold().strip(), item)
    rows, cols = [], []
    n_playlists = 0
    for path in iter_sources(str(source)):
        for playlist in json.loads(read_source(path))["playlists"]:
            found = {
                ids.get(t.get("artist_name", "").casefold().strip()) for t in playlist["tracks"]
            }
            found.discard(None)
            rows.extend([n_playlists] * len(found))
            cols.extend(sorted(found))
            n_playlists += 1
    X = sparse.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_playlists, n)
    )
    return cosine_table(X), int((X.getnnz(axis=0) > 0).sum())


def cosine_table(X: sparse.csr_matrix) -> np.ndarray:
    """Item-item cosine co-occurrence of a binary ``(rows, n)`` matrix: the dense ``(n + 1,
    n)`` float32 table ``rows(a, b) / sqrt(rows(a) rows(b))``, zero diagonal; the extra,
    all-zero row is the padding id's."""
    n = X.shape[1]
    inv = (1.0 / np.sqrt(np.maximum(np.asarray(X.sum(axis=0)).ravel(), 1.0))).astype(np.float32)
    table = np.zeros((n + 1, n), dtype=np.float32)
    table[:n] = (X.T @ X).toarray() * inv[:, None] * inv[None, :]
    np.fill_diagonal(table[:n], 0.0)
    return table


def mpd_features(
    table: np.ndarray, hist: np.ndarray, lengths: np.ndarray, cands: np.ndarray
) -> np.ndarray:
    """``(m, N, 3)`` float32 :data:`MPD_FEATURES` of the candidates: the MPD cosine with the
    history items summed, its maximum, and with the last history item."""
    last = hist[np.arange(len(hist)), lengths - 1]
    cos = table[hist[:, :, None], cands[:, None, :]]  # (m, L, N); the padding row is zero
    return np.stack([cos.sum(axis=1), cos.max(axis=1), table[last[:, None], cands]], axis=-1)


def _end_statistics(seqs: Sequence[Sequence[int]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Where items sit in the sequences: ``(last_rate, rel_pos)``, both ``(n,)``.

    ``last_rate`` is the log share of an item's occurrences that end a user's sequence, smoothed
    with one pseudo-occurrence at the overall share (an unseen item gets the overall share);
    ``rel_pos`` is the mean relative position ``t / (len - 1)`` of its occurrences, smoothed with
    one pseudo-occurrence at 0.5. The protocol's target is a user's last item, and the sequences
    follow one global order, so items that end sequences (late in that order) are likelier."""
    occurrences = np.zeros(n)
    ends = np.zeros(n)
    positions = np.zeros(n)
    for s in seqs:
        s = np.asarray(s, dtype=np.int64)
        if len(s) == 0:
            continue
        np.add.at(occurrences, s, 1.0)
        np.add.at(positions, s, np.arange(len(s)) / max(len(s) - 1, 1))
        ends[s[-1]] += 1.0
    prior = ends.sum() / max(occurrences.sum(), 1.0)
    last_rate = np.log((ends + prior) / (occurrences + 1.0))
    rel_pos = (positions + 0.5) / (occurrences + 1.0)
    return last_rate.astype(np.float32), rel_pos.astype(np.float32)


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
    seqs: Sequence[Sequence[int]], pad_id: int, max_history: int = 10, tail: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every position ``t >= 3`` of each sequence as an example (with ``tail``, only the last
    ``tail`` positions of each sequence).

    Returns:
        ``(hist, lengths, targets)``: ``(m, max_history)`` right-padded histories (the up-to
        ``max_history`` items before ``t``), ``(m,)`` lengths, ``(m,)`` targets.
    """
    hist, lengths, targets = [], [], []
    for s in seqs:
        for t in range(_first_position(len(s), tail), len(s)):
            h = list(s[max(0, t - max_history) : t])
            hist.append(h + [pad_id] * (max_history - len(h)))
            lengths.append(len(h))
            targets.append(s[t])
    return (
        np.array(hist, dtype=np.int64).reshape(-1, max_history),
        np.array(lengths, dtype=np.int64),
        np.array(targets, dtype=np.int64),
    )


def example_weights(
    seqs: Sequence[Sequence[int]], power: float, tail: int | None = None
) -> np.ndarray:
    """Weight of each :func:`sequence_examples` example (same ``tail``): ``n_user ** -power``
    (``n_user`` = the user's examples), scaled to mean 1. ``power`` 0 weighs positions equally,
    1 weighs users equally (the evaluation's one row per user)."""
    counts = [len(s) - _first_position(len(s), tail) for s in seqs if len(s) > MIN_HISTORY]
    w = np.concatenate([np.full(n, float(n) ** -power) for n in counts] or [np.zeros(0)])
    return w / max(float(w.mean()), 1e-12) if len(w) else w


def _first_position(length: int, tail: int | None) -> int:
    """First example position of a sequence of ``length`` items (see :func:`sequence_examples`)."""
    return MIN_HISTORY if tail is None else max(MIN_HISTORY, length - tail)


@dataclass
class _Ranker:
    """One trained ranker of the ensemble: its model, feature scaling, the basis its behavior
    vectors were learnt in (``reference``), the behavior vectors of the full statistics rotated
    into it (set after the full refit), its training log and best held-out HR@1."""

    model: object
    mean: np.ndarray
    std: np.ndarray
    reference: np.ndarray
    history: list[dict]
    holdout_hr1: float
    behavior: np.ndarray | None = None


@dataclass
class _Examples:
    """Ranker examples of several folds: ``fold[i]`` names the statistics example ``i``'s
    features come from (the fit that did not see its user)."""

    hist: np.ndarray
    lengths: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    fold: np.ndarray

    @classmethod
    def build(
        cls,
        groups: Sequence[Sequence[Sequence[int]]],
        pad_id: int,
        max_history: int,
        tail: int | None,
        power: float,
    ) -> _Examples:
        """Examples of ``groups[k]`` (the sequences of fold ``k``'s users), fold by fold."""
        parts = []
        for k, seqs in enumerate(groups):
            hist, lengths, targets = sequence_examples(seqs, pad_id, max_history, tail)
            weights = example_weights(seqs, power, tail)
            parts.append((hist, lengths, targets, weights, np.full(len(hist), k, dtype=np.int64)))
        return cls(*(np.concatenate(column) for column in zip(*parts, strict=True)))

    def __len__(self) -> int:
        return len(self.hist)


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
        self.rankers: list[_Ranker] = []
        self.model = None  # the first ranker's model
        self.stats: BehaviorStats | None = None
        self.history: list[dict] = []
        self.best_holdout_hr1: float | None = None
        self._best: tuple[float, dict] = (float("-inf"), {})
        self.seconds: dict[str, float] = {}
        # feature scaling of the ranker being trained or scored
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None
        self._cols = [FEATURES.index(f) for f in self.config.features]
        self._mpd: np.ndarray | None = None
        self.mpd_artists: int | None = None
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

    @staticmethod
    def _behavior(stats: BehaviorStats, reference: np.ndarray) -> np.ndarray:
        """``(n_items + 1, f)`` behavior vectors in the ``reference`` basis (zero padding row)."""
        factors = stats.behavior
        rotation = procrustes(factors.astype(np.float64), reference.astype(np.float64))
        out = np.zeros((stats.n_items + 1, factors.shape[1]), dtype=np.float32)
        out[:-1] = factors @ rotation
        out[:-1] /= max(float(np.sqrt((out[:-1] ** 2).sum(axis=1).mean())), 1e-6)
        return out

    def _raw_features(
        self, stats: BehaviorStats, hist: np.ndarray, lengths: np.ndarray, cands: np.ndarray
    ) -> np.ndarray:
        """``(m, N, n_features)`` float32: the configured features, then the MPD ones (if any)."""
        feats = stats.features(hist, lengths, cands)[..., self._cols]
        if self._mpd is None:
            return feats
        mpd = mpd_features(self._mpd, hist, lengths, cands)
        return np.concatenate([feats, mpd.astype(np.float32)], axis=-1)

    def _features(
        self, stats: BehaviorStats, hist: np.ndarray, lengths: np.ndarray, cands: np.ndarray
    ):
        """Standardised ``(m, N, n_features)`` float32 tensor of the configured features."""
        import torch

        feats = (self._raw_features(stats, hist, lengths, cands) - self._mean) / self._std
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
            n_features=len(self._cols) + (len(MPD_FEATURES) if self._mpd is not None else 0),
            hidden_dropout=c.dropout,
            **sizes,
        )
        model = LlaraForCandidateScoring(config)
        # the per-seed-count reweighting is the MPD ranker's (its blends are tuned per context);
        # here it stays at zero and the feature head alone blends, as the LastFM figures were
        # measured
        model.feature_context.requires_grad_(False)
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

    def _fold_scores(
        self, model, fits: list, ex: _Examples, cands: np.ndarray, full: bool
    ) -> np.ndarray:
        """Scores ``(len(ex), N)`` of examples, each with its own fold's statistics."""
        out = np.empty(cands.shape, dtype=np.float64)
        for k, (stats, behavior) in enumerate(fits):
            sel = np.flatnonzero(ex.fold == k)
            if len(sel):
                out[sel] = self._scores(
                    model, stats, behavior, ex.hist[sel], ex.lengths[sel], cands[sel], full=full
                )
        return out

    def _batch_scores(
        self,
        model,
        fits: list,
        ex: _Examples,
        idx: np.ndarray,
        cands: np.ndarray,
        hybrid: float,
        full: bool,
    ):
        """Training scores ``(len(idx), N)`` (a tensor with gradients) of examples ``idx`` sorted
        by fold, which the caller's targets and weights must follow."""
        import torch

        parts = []
        for k, (stats, behavior) in enumerate(fits):
            sel = idx[ex.fold[idx] == k]
            if not len(sel):
                continue
            if full:
                inputs = self._inputs(
                    stats, behavior, ex.hist[sel], ex.lengths[sel], cands[sel], hybrid
                )
                parts.append(model(**inputs, return_dict=True).scores)
            else:
                feats = self._features(stats, ex.hist[sel], ex.lengths[sel], cands[sel])
                parts.append(model.feature_head(feats)[..., 0])
        return torch.cat(parts)

    # -- fit / score -----------------------------------------------------------------------

    def fit(self, data: LastFMData) -> None:
        """Train ``config.ensemble`` rankers (:meth:`_fit_ranker`), then fit the statistics the
        rankers score with on all training users."""
        c = self.config
        start = time.perf_counter()
        seqs = user_sequences(data.train)
        text = self._text_vectors(data)
        self.seconds["text"] = time.perf_counter() - start
        if c.mpd is not None:
            self._mpd, self.mpd_artists = mpd_artist_cosine(c.mpd, data.names)
            log.info("llara++ MPD: %d of %d artists in its playlists", self.mpd_artists, len(text))
            self.seconds["mpd"] = time.perf_counter() - start
        self.rankers = [self._fit_ranker(data, seqs, text, c.seed + m) for m in range(c.ensemble)]
        self.history = [{"ranker": m, **h} for m, r in enumerate(self.rankers) for h in r.history]
        self.best_holdout_hr1 = float(np.mean([r.holdout_hr1 for r in self.rankers]))
        self.seconds["train"] = time.perf_counter() - start

        self.stats = BehaviorStats(seqs, data.n_items, text, c, c.seed)
        for ranker in self.rankers:
            ranker.behavior = self._behavior(self.stats, ranker.reference)
        self.model = self.rankers[0].model
        self.seconds["total"] = time.perf_counter() - start

    def _fit_ranker(
        self, data: LastFMData, seqs: list[list[int]], text: np.ndarray, seed: int
    ) -> _Ranker:
        """One ranker: fit statistics fold by fold (``seed`` draws the folds, the held-out users,
        the negatives, ALS and the initialisation) and train on the cross-fitted examples."""
        import torch

        c = self.config
        rng = np.random.default_rng(seed)

        # fold k's examples get features from statistics fitted on the other folds' users
        order = rng.permutation(len(seqs))
        folds = np.array_split(order, c.folds)[: c.folds if c.cross_fit else 1]
        users = np.concatenate(folds)
        held = np.zeros(len(seqs), dtype=bool)
        n_held = max(1, round(c.holdout_fraction * len(users)))
        held[rng.choice(users, n_held, replace=False)] = True
        fold_stats = [
            BehaviorStats([seqs[i] for i in np.setdiff1d(order, fold)], data.n_items, text, c, seed)
            for fold in folds
        ]
        reference = fold_stats[0].behavior  # the basis every behavior vector is rotated into
        fits = [(stats, self._behavior(stats, reference)) for stats in fold_stats]
        del fold_stats

        pad = data.n_items
        ex = _Examples.build(
            [[seqs[i] for i in fold if not held[i]] for fold in folds],
            pad,
            c.max_history,
            c.tail_positions,
            c.user_weight_power,
        )
        h_ex = _Examples.build(
            [[seqs[i] for i in fold if held[i]] for fold in folds], pad, c.max_history, 1, 0.0
        )
        if len(ex) == 0 or len(h_ex) == 0:
            raise ValueError(
                "too few ranker examples: the example users (and their held-out slice) need "
                f"sequences of >= {MIN_HISTORY + 1} items"
            )
        h_cands = sample_candidates(h_ex.hist, h_ex.targets, data.n_items, rng)

        # feature scaling from one draw of training candidates
        cands0 = sample_candidates(ex.hist, ex.targets, data.n_items, rng, c.n_negatives + 1)
        f0 = np.concatenate(
            [
                self._raw_features(stats, ex.hist[sel], ex.lengths[sel], cands0[sel])
                for k, (stats, _) in enumerate(fits)
                for sel in _chunks(np.flatnonzero(ex.fold == k), 2048)
            ]
        )
        f0 = f0.reshape(-1, f0.shape[-1])
        self._mean = f0.mean(axis=0).astype(np.float32)
        self._std = np.maximum(f0.std(axis=0), 1e-6).astype(np.float32)
        self._mean[self._cols.index(BASE_FEATURE)] = 0.0  # keep cos_sum = 0 meaning "no signal"
        base = f0[:, self._cols.index(BASE_FEATURE)] / self._std[self._cols.index(BASE_FEATURE)]
        temperature = _fit_temperature(base.reshape(len(ex), -1))
        del f0

        holdout = (fits, h_ex, h_cands)
        with torch_threads(self.config.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = self._build(fits[0][1].shape[1], text.shape[1])
            with torch.no_grad():
                model.feature_head.weight.zero_()
                model.feature_head.bias.zero_()
                model.feature_head.weight[0, self._cols.index(BASE_FEATURE)] = temperature
                model.cand_head.fc2.weight.zero_()  # the transformer term starts at exactly 0
                model.cand_head.fc2.bias.zero_()
            model.eval()
            start_hr = _hr1(self._fold_scores(model, *holdout, full=False))
            self._best = (start_hr, {k: v.clone() for k, v in model.state_dict().items()})
            self.history = [
                {"phase": "start", "epoch": 0, "holdout_hr1": self._best[0], "loss": float("nan")}
            ]
            log.info("llara++ start (cos_sum only): held-out HR@1 %.4f", self._best[0])
            head = list(model.feature_head.parameters())
            opt = torch.optim.AdamW(head, lr=c.feature_lr, weight_decay=0.0)
            self._train_phase("features", model, opt, fits, ex, holdout, c.feature_epochs, rng)
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
                self._train_phase("ranker", model, opt, fits, ex, holdout, c.epochs, rng)
            model.load_state_dict(self._best[1])
            model.eval()
        ranker = _Ranker(model, self._mean, self._std, reference, self.history, self._best[0])
        self._best = (self._best[0], {})
        return ranker

    def _train_phase(
        self,
        phase: str,
        model,
        opt,
        fits: list,
        ex: _Examples,
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
        ramp = c.curriculum_epochs * -(-len(ex) // c.batch_size)
        curriculum = "linear" if c.curriculum else "none"
        bad, step = 0, 0
        for epoch in range(1, epochs + 1):
            model.train()
            cands = sample_candidates(
                ex.hist, ex.targets, fits[0][0].n_items, rng, c.n_negatives + 1
            )
            perm = rng.permutation(len(ex))
            total = 0.0
            for a in range(0, len(perm), c.batch_size):
                idx = perm[a : a + c.batch_size]
                idx = idx[np.argsort(ex.fold[idx], kind="stable")]
                hybrid = float(rng.random() < p_hybrid(curriculum, step, ramp))
                scores = self._batch_scores(model, fits, ex, idx, cands, hybrid, full)
                w = torch.from_numpy(ex.weights[idx].astype(np.float32))
                nll = -torch.log_softmax(scores, dim=-1)[:, 0]  # the target is column 0
                loss = (w * nll).sum() / w.sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                step += 1
            model.eval()
            hr = _hr1(self._fold_scores(model, *holdout, full=full))
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
        """``(n_rows, n_candidates)`` float64 scores, higher is better: the sum of the rankers'
        scores (their logits)."""
        assert self.rankers and self.stats is not None, "fit first"
        hist, lengths = pad_histories(histories, self.config.max_history, self.stats.n_items)
        hybrid = 0.0 if self.config.text_only_eval else 1.0
        cands = np.asarray(candidates, dtype=np.int64)
        total = np.zeros(cands.shape, dtype=np.float64)
        with torch_threads(self.config.threads):
            for r in self.rankers:
                self._mean, self._std = r.mean, r.std
                total += self._scores(
                    r.model,
                    self.stats,
                    r.behavior,
                    hist,
                    lengths,
                    cands,
                    hybrid,
                    full=self.config.use_transformer,
                )
        return total


def llara_minilm() -> LlaraLastFMScorer:
    """llara++ whose ranker layers are MiniLM's six pretrained encoder layers with LoRA adapters
    (LLaRA's LLM role) instead of a decoder trained from scratch; one ranker, not an ensemble (a
    MiniLM ranker trains about 15 times slower), every other setting the same."""
    return LlaraLastFMScorer(
        LlaraLastFMConfig(backbone="minilm", num_hidden_layers=6, ensemble=1, threads=None)
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


def _chunks(idx: np.ndarray, size: int) -> list[np.ndarray]:
    """``idx`` cut into consecutive pieces of at most ``size``."""
    return [idx[a : a + size] for a in range(0, len(idx), size)]


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
