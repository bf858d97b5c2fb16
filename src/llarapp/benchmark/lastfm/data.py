"""The LastFM split of LLaRA and its evaluation protocol: loading, candidates, HitRatio@1.

The data is the processed LastFM split published with LLaRA (Liao et al., SIGIR 2024), read at
run time from a directory holding ``train_data.jsonl``, ``Val_data.jsonl`` (or
``Test_data.jsonl``) and ``id2name.txt``. A row is ``{"seq": [10 ids], "len_seq": n, "next": id}``:
the history is left-aligned and padded on the right with ``pad_id`` (= the number of items, 4606).

Protocol (as in LLaRA's own code):

* evaluation rows with ``len_seq >= 3``;
* candidates: the true ``next`` plus 19 items drawn uniformly, without replacement, from the items
  that are neither in the row's history nor the target (the pad id is never an item), shuffled;
* HitRatio@1 over *all* evaluation rows (a ranking model always gives a valid answer).

Training data layout. ``train_data.jsonl`` holds, for each training user in turn, one row per
position of the user's sequence: a first row with an empty history (all pad, ``len_seq`` 1), then
growing prefixes, and once the history reaches 10 items a sliding window of the last 10. Every
item of a user's sequence is therefore the ``next`` of exactly one row, and
:func:`user_sequences` rebuilds a user's full sequence as the ``next`` values of its rows in file
order. A new user starts at a row whose history is empty, or (for files without such rows) at any
row whose history is not the tail of the sequence rebuilt so far.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

TRAIN_FILE = "train_data.jsonl"
SPLIT_FILES = {"val": "Val_data.jsonl", "test": "Test_data.jsonl"}
NAMES_FILE = "id2name.txt"
MIN_LEN_SEQ = 3
N_CANDIDATES = 20


@dataclass(frozen=True)
class Row:
    """One jsonl row: the unpadded history (oldest first), the target and the file's ``len_seq``.

    ``len_seq`` is kept as written (an empty history is written with ``len_seq`` 1), because the
    protocol filters on it.
    """

    history: tuple[int, ...]
    target: int
    len_seq: int


@dataclass
class LastFMData:
    """A loaded split (:func:`load_lastfm`)."""

    train: list[Row]  # every training row, unfiltered (prefixes of the training users)
    eval_rows: list[Row]  # the chosen split, filtered to len_seq >= 3
    names: dict[int, str]  # item id -> artist name
    n_items: int  # items are 0..n_items-1
    pad_id: int  # the padding id (== n_items)
    eval_rows_total: int = 0  # evaluation rows before the len_seq filter


def _read_names(path: Path) -> dict[int, str]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; expected the item names as `id::artist name` lines (UTF-8)"
        )
    names: dict[int, str] = {}
    with path.open(encoding="utf-8-sig", newline=None) as f:  # universal newlines: CRLF ok
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            item, sep, name = line.partition("::")
            if not sep or not item.strip().isdigit():
                raise ValueError(f"{path}:{lineno}: expected `id::artist name`, got {line[:80]!r}")
            item_id = int(item)
            if item_id in names:
                raise ValueError(f"{path}:{lineno}: item id {item_id} appears twice")
            names[item_id] = name
    if not names:
        raise ValueError(f"{path}: no `id::artist name` lines")
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{path}: item ids must be 0..{len(names) - 1} with none missing")
    return names


def _read_rows(path: Path, n_items: int, pad_id: int) -> list[Row]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; expected a jsonl file of "
            '{"seq": [ids padded with the pad id], "len_seq": n, "next": id} rows'
        )
    rows: list[Row] = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
                seq, len_seq, target = obj["seq"], int(obj["len_seq"]), int(obj["next"])
                seq = [int(x) for x in seq]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f'{where}: expected a JSON object with "seq" (list of ids), "len_seq" and '
                    f'"next"; {type(e).__name__}: {e}'
                ) from e
            if not 0 <= target < n_items:
                raise ValueError(f"{where}: next={target} is not an item id (0..{n_items - 1})")
            if any(not 0 <= x <= pad_id for x in seq):
                raise ValueError(f"{where}: seq has ids outside 0..{pad_id} (pad {pad_id})")
            history = tuple(x for x in seq if x != pad_id)
            rows.append(Row(history=history, target=target, len_seq=len_seq))
    return rows


def load_lastfm(
    data_dir: str | Path, split: str = "val", min_len_seq: int = MIN_LEN_SEQ
) -> LastFMData:
    """Read the training rows, the ``split`` rows (``val`` or ``test``) and the item names.

    ``eval_rows`` keeps rows with ``len_seq >= min_len_seq`` (3, as LLaRA); ``train`` is kept
    whole. ``n_items`` is the number of names and ``pad_id == n_items`` (LLaRA's convention).
    """
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(
            f"{data_dir}: not a directory; expected the LLaRA LastFM files "
            f"{TRAIN_FILE}, {SPLIT_FILES[split]}, {NAMES_FILE}"
        )
    names = _read_names(data_dir / NAMES_FILE)
    n_items = len(names)
    pad_id = n_items
    train = _read_rows(data_dir / TRAIN_FILE, n_items, pad_id)
    if not train:
        raise ValueError(f"{data_dir / TRAIN_FILE}: no rows")
    split_rows = _read_rows(data_dir / SPLIT_FILES[split], n_items, pad_id)
    eval_rows = [r for r in split_rows if r.len_seq >= min_len_seq]
    if not eval_rows:
        raise ValueError(
            f"{data_dir / SPLIT_FILES[split]}: no rows with len_seq >= {min_len_seq} "
            f"({len(split_rows)} rows in all)"
        )
    return LastFMData(
        train=train,
        eval_rows=eval_rows,
        names=names,
        n_items=n_items,
        pad_id=pad_id,
        eval_rows_total=len(split_rows),
    )


def user_sequences(rows: Sequence[Row]) -> list[list[int]]:
    """Rebuild each training user's full item sequence from its prefix rows (see module doc).

    A user's sequence is the ``next`` of each of its rows, in file order. A row starts a new user
    when its history is empty or is not the tail of the sequence rebuilt so far; in the second
    case the row's history is taken as the start of the new sequence.
    """
    users: list[list[int]] = []
    current: list[int] | None = None
    for row in rows:
        h = list(row.history)
        continues = current is not None and bool(h) and current[-len(h) :] == h
        if not continues:
            current = h
            users.append(current)
        current.append(row.target)
    return users


def user_item_matrix(
    seqs: Sequence[Sequence[int]], n_items: int, dtype: type = np.float64
) -> sparse.csr_matrix:
    """``(len(seqs), n_items)`` binary matrix: 1 where a user's sequence holds the item."""
    indptr = np.cumsum([0] + [len(set(s)) for s in seqs])
    indices = np.fromiter((i for s in seqs for i in sorted(set(s))), dtype=np.int64)
    return sparse.csr_matrix(
        (np.ones(len(indices), dtype=dtype), indices, indptr), shape=(len(seqs), n_items)
    )


def pad_histories(
    histories: Sequence[Sequence[int]], max_len: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(hist, lengths)``: the last ``max_len`` items of each history, left-aligned in a
    ``(len(histories), max_len)`` array padded on the right with ``pad_id``, and their counts.

    Raises:
        ValueError: A history is empty (a scorer needs at least one item).
    """
    hist = np.full((len(histories), max_len), pad_id, dtype=np.int64)
    lengths = np.zeros(len(histories), dtype=np.int64)
    for i, h in enumerate(histories):
        h = list(h)[-max_len:]
        if not h:
            raise ValueError(f"history {i} is empty")
        hist[i, : len(h)] = h
        lengths[i] = len(h)
    return hist, lengths


def candidate_sets(
    rows: Sequence[Row], n_items: int, seed: int, n_candidates: int = N_CANDIDATES
) -> np.ndarray:
    """``(len(rows), n_candidates)`` item ids: each row's target once, at a random position, and
    ``n_candidates - 1`` distinct negatives drawn uniformly from ``0..n_items-1`` minus the
    history and the target (so the pad id, ``>= n_items``, never appears). Deterministic in
    ``seed``."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(rows), n_candidates), dtype=np.int64)
    all_items = np.arange(n_items)
    for i, row in enumerate(rows):
        excluded = np.fromiter({*row.history, row.target}, dtype=np.int64)
        allowed = np.setdiff1d(all_items, excluded, assume_unique=True)
        if len(allowed) < n_candidates - 1:
            raise ValueError(
                f"row {i}: only {len(allowed)} items outside its history, "
                f"need {n_candidates - 1} negatives"
            )
        cands = np.append(rng.choice(allowed, n_candidates - 1, replace=False), row.target)
        out[i] = rng.permutation(cands)
    return out


def hit_ratio_at_1(scores: np.ndarray, candidates: np.ndarray, targets: Sequence[int]) -> float:
    """Share of rows whose target has the single highest score among its candidates.

    Ties are broken *against* the target: a row counts as a hit only if the target's score is
    strictly greater than every other candidate's, so a constant scorer gets 0, not 1. NaN
    scores are refused.
    """
    scores = np.asarray(scores, dtype=np.float64)
    candidates = np.asarray(candidates)
    targets = np.asarray(targets)
    if scores.shape != candidates.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and candidates {candidates.shape} must match")
    if targets.shape != (len(candidates),):
        raise ValueError(f"targets {targets.shape}: need one per row ({len(candidates)})")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    is_target = candidates == targets[:, None]
    if not (is_target.sum(axis=1) == 1).all():
        raise ValueError("every candidate row must hold its target exactly once")
    target_score = scores[is_target]
    best_other = np.where(is_target, -np.inf, scores).max(axis=1)
    return float(np.mean(target_score > best_other))
