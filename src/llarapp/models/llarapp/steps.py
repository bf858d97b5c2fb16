"""The typed steps of LLaRA++ inference and the one builder of the ranker's inputs.

``encode(case) -> Query`` (:meth:`LlaraPP.encode`), ``retrieve(Query) -> Candidates``
(:func:`retrieve`), ``rank(Candidates, k) -> Ranked`` (:meth:`LlaraPP.rank`). The benchmark, the
gate and the servers run these same steps; training builds its cases with :func:`retrieve` and
its batches with :func:`ranker_inputs`, and the ONNX export checks parity on what
:func:`ranker_inputs` builds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from llarapp.data.dataset import Case
from llarapp.data.names import TrackNames
from llarapp.models.llarapp.stage import Query, Stage

#: texts -> (n, text_dim) float32 L2-normalised MiniLM vectors
Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass
class Candidates:
    """What retrieval hands the ranker for one case."""

    query: Query  # what was retrieved for
    candidates: np.ndarray  # (N,) int64 catalogue indices, best first by the retriever
    features: np.ndarray  # (N, F) float32 retriever features (retriever.FEATURES)
    rank_seed_idx: np.ndarray  # (S,) int64 the known seeds the ranker reads (hybrid tokens)
    seed_query: np.ndarray | None = None  # (f,) behavior-space seed query (training reads it)
    title_query: np.ndarray | None = None  # (f,) behavior-space title query (training reads it)
    rank_seed_text: np.ndarray | None = None  # (U, text_dim) the unknown seeds it reads
    # (text-only tokens, after the known ones; rank_seeds() of the query); None: none


@dataclass
class Ranked:
    """The answer: catalogue indices best first, with their scores (popularity fill below
    every ranked candidate)."""

    indices: np.ndarray  # (k,) int64
    scores: np.ndarray  # (k,) float32


def encode(
    stage: Stage,
    case: Case,
    embed: Embed,
    names: TrackNames | None = None,
    tiebreak: np.ndarray | None = None,
) -> Query:
    """Step 1: a case -> its :class:`Query`.

    A seed is the catalogue track with its URI, else (with ``names``) the catalogue track
    named like it (track and artist, case-folded; the highest ``tiebreak`` of them, and every
    track so named is excluded from the answer), else unknown: its text is embedded and its
    artist looked up. The stripped title and the unknown seeds go through one ``embed`` call.
    """
    index = stage.catalog.index
    known: list[int] = []
    exclude: list[int] = []
    unknown_texts: list[str] = []
    unknown_artists: list[int] = []
    for t in case.seeds:
        idx = index.get(t.track_uri) if t.track_uri else None
        if idx is not None:
            known.append(idx)
            exclude.append(idx)
            continue
        same = names.lookup(t.track_name, t.artist_name) if names is not None else ()
        if len(same):  # named like a catalogue track: that track (most popular of them)
            known.append(int(same[np.argmax(tiebreak[same])]))
            exclude.extend(same.tolist())
        else:
            unknown_texts.append(t.text)
            unknown_artists.append(stage.artist_code(t.artist_name))
    title = case.title.strip() if case.title and case.title.strip() else None
    texts = ([title] if title else []) + unknown_texts
    dim = stage.catalog.text.shape[1]
    vecs = np.asarray(embed(texts), np.float32) if texts else np.zeros((0, dim), np.float32)
    return Query(
        vecs[0] if title else None,
        np.array(list(dict.fromkeys(known)), dtype=np.int64),
        vecs[1:] if title else vecs,
        np.array(unknown_artists, dtype=np.int64),
        stage.title_artists(title),
        np.unique(np.array(exclude, dtype=np.int64)),
    )


def rank_seeds(
    seed_idx: np.ndarray, extra_seed_text: np.ndarray, max_seeds: int
) -> tuple[np.ndarray, np.ndarray]:
    """The seeds the ranker reads, at most ``max_seeds``: the last unknown ones (text-only
    tokens: what LLaRA's curriculum teaches the ranker to read, text without behavior), then
    the last known ones (hybrid tokens). Returns ``(known indices, unknown text vectors)``."""
    unknown = extra_seed_text[max(0, len(extra_seed_text) - max_seeds) :]
    n_known = max_seeds - len(unknown)
    return seed_idx[max(0, len(seed_idx) - n_known) :], unknown


def retrieve(stage: Stage, query: Query, max_seeds: int) -> Candidates:
    """Step 2: the stage's retriever over ``query``; the ranker reads the seeds
    :func:`rank_seeds` keeps."""
    retrieved, seed_q, title_q = stage.retrieve(query)
    known, unknown = rank_seeds(query.seed_idx, query.extra_seed_text, max_seeds)
    return Candidates(
        query,
        retrieved.candidates,
        retrieved.features,
        known,
        seed_q,
        title_q,
        unknown if len(unknown) else None,
    )


def ranker_inputs(
    text: np.ndarray,
    behavior: np.ndarray,
    title_vecs: Sequence[np.ndarray | None],
    seed_idx: Sequence[np.ndarray],
    candidates: Sequence[np.ndarray],
    features: Sequence[np.ndarray],
    hybrid: bool,
    cand_vectors: np.ndarray | None = None,
    seed_texts: Sequence[np.ndarray | None] | None = None,
) -> dict[str, np.ndarray]:
    """The ranker's inputs for a batch of cases, right-padded (masks 0 on padding): the one
    place they are built, for training, the benchmark, the servers and the export.

    Args:
        text: (n_items, text_dim) catalogue text vectors (float16 or float32; the rows read
            are widened to float32).
        behavior: (n_items, f) float32 catalogue behavior vectors.
        title_vecs: per case, the (text_dim,) title vector or None.
        seed_idx: per case, (S_i,) catalogue indices of the seeds the ranker reads.
        candidates: per case, (N_i,) catalogue indices.
        features: per case, (N_i, F) retriever features.
        hybrid: hybrid tokens (text + behavior) or text-only tokens.
        cand_vectors: (n_items, H) the ranker's candidate vector of every catalogue track
            (:meth:`LlaraPP.catalog_vectors`): given, the candidates come as ``cand_vectors``
            (the serving graph's input) instead of their text / behavior / use flags
            (``forward``'s).
        seed_texts: per case, the (U_i, text_dim) text vectors of seeds the catalogue lacks
            (:attr:`Candidates.rank_seed_text`) or None: text-only tokens after the known
            seeds, in hybrid batches too (they have no behavior vector).

    Returns:
        float32 arrays named as the ranker's inputs (``llarapp.models.llara.INPUT_NAMES``, or
        the serving graph's with ``cand_vectors``): ``(B, ...)``.
    """
    B = len(candidates)
    unknown = [
        np.zeros((0, text.shape[1]), np.float32) if u is None else u
        for u in (seed_texts or [None] * B)
    ]
    S = max((len(s) + len(u) for s, u in zip(seed_idx, unknown, strict=True)), default=0)
    N = max((len(c) for c in candidates), default=0)
    F = features[0].shape[1] if B else 0
    title = np.zeros((B, text.shape[1]), np.float32)
    title_mask = np.zeros(B, np.float32)
    seeds = np.zeros((B, S), np.int64)  # padding gathers row 0, masked out
    seed_mask = np.zeros((B, S), np.float32)
    seed_known = np.zeros((B, S), np.float32)
    cands = np.zeros((B, N), np.int64)
    cand_features = np.zeros((B, N, F), np.float32)
    cand_mask = np.zeros((B, N), np.float32)
    for i in range(B):
        if title_vecs[i] is not None:
            title[i], title_mask[i] = title_vecs[i], 1.0
        s, n = len(seed_idx[i]), len(candidates[i])
        seeds[i, :s], seed_known[i, :s] = seed_idx[i], 1.0
        seed_mask[i, : s + len(unknown[i])] = 1.0
        cands[i, :n], cand_mask[i, :n] = candidates[i], 1.0
        cand_features[i, :n] = features[i]
    use = np.float32(1.0 if hybrid else 0.0)
    seed_text = np.asarray(text[seeds], np.float32)
    for i, u in enumerate(unknown):  # (their behavior rows are row 0's, never read: use 0)
        s = len(seed_idx[i])
        seed_text[i, s : s + len(u)] = u
    inputs = {
        "title_vec": title,
        "title_mask": title_mask,
        "seed_text": seed_text,
        "seed_behavior": behavior[seeds],
        "seed_use_behavior": seed_known * use,
        "seed_mask": seed_mask,
    }
    if cand_vectors is None:
        inputs |= {
            "cand_text": np.asarray(text[cands], np.float32),
            "cand_behavior": behavior[cands],
            "cand_use_behavior": cand_mask * use,
        }
    else:
        inputs["cand_vectors"] = cand_vectors[cands]
    return inputs | {"cand_features": cand_features, "cand_mask": cand_mask}
