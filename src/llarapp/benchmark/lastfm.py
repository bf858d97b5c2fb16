"""LLaRA's LastFM next-item benchmark: 20 candidates, HitRatio@1, averaged over candidate seeds.

The data is the processed LastFM split published with LLaRA (Liao et al., SIGIR 2024), read at
run time from a directory holding ``train_data.jsonl``, ``Val_data.jsonl`` (or
``Test_data.jsonl``) and ``id2name.txt``. A row is ``{"seq": [10 ids], "len_seq": n, "next": id}``:
the history is left-aligned and padded on the right with ``pad_id`` (= the number of items, 4606).

Protocol (as in LLaRA's own code):

* evaluation rows with ``len_seq >= 3``;
* candidates: the true ``next`` plus 19 items drawn uniformly, without replacement, from the items
  that are neither in the row's history nor the target (the pad id is never an item), shuffled;
* HitRatio@1 over *all* evaluation rows (a ranking model always gives a valid answer);
* mean and sample standard deviation (``ddof=1``) over several candidate seeds ``0..seeds-1``.
  Models are fitted once; only the candidate sets change with the seed.

Training data layout. ``train_data.jsonl`` holds, for each training user in turn, one row per
position of the user's sequence: a first row with an empty history (all pad, ``len_seq`` 1), then
growing prefixes, and once the history reaches 10 items a sliding window of the last 10. Every
item of a user's sequence is therefore the ``next`` of exactly one row, and
:func:`user_sequences` rebuilds a user's full sequence as the ``next`` values of its rows in file
order. A new user starts at a row whose history is empty, or (for files without such rows) at any
row whose history is not the tail of the sequence rebuilt so far.

JSON written by :func:`run_lastfm`::

    {"split": "val", "seeds": [0, ...],
     "dataset": {"n_items", "pad_id", "train_rows", "train_users", "eval_rows_total",
                 "eval_rows", "min_len_seq", "n_candidates"},
     "models": {NAME: {"hr@1": mean, "hr@1_std": std, "per_seed": [hr, ...]}},
     "seconds": {"load": s, "candidates": s, "fit:NAME": s, "score:NAME": s, "total": s}}

The scorer list is open: another model joins with :func:`register_scorer`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from llarapp.benchmark.timing import timed

log = logging.getLogger(__name__)

TRAIN_FILE = "train_data.jsonl"
SPLIT_FILES = {"val": "Val_data.jsonl", "test": "Test_data.jsonl"}
NAMES_FILE = "id2name.txt"
MIN_LEN_SEQ = 3
N_CANDIDATES = 20


# --------------------------------------------------------------------------------------- data


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


# ------------------------------------------------------------------------------------ scorers


@runtime_checkable
class SequentialScorer(Protocol):
    name: str

    def fit(self, data: LastFMData) -> None: ...

    def score(self, histories: list[list[int]], candidates: np.ndarray) -> np.ndarray:
        """``(n_rows, n_candidates)`` scores, higher is better."""
        ...


ScorerFactory = Callable[[], SequentialScorer]
SCORERS: dict[str, ScorerFactory] = {}


def register_scorer(
    name: str, *, replace: bool = False
) -> Callable[[ScorerFactory], ScorerFactory]:
    """Register ``factory() -> SequentialScorer`` (a class or function) under ``name``."""

    def register(factory: ScorerFactory) -> ScorerFactory:
        if name in SCORERS and not replace and SCORERS[name] is not factory:
            raise ValueError(f"scorer {name!r} is already registered")
        SCORERS[name] = factory
        return factory

    return register


def item_counts(data: LastFMData) -> np.ndarray:
    """Occurrences of each item in the training users' full sequences.

    Each item of a user's sequence is the ``next`` of exactly one training row, so this equals
    counting ``next`` over all rows. Counting over the ``seq`` windows instead would count an item
    up to 10 more times, more for items placed late in long sequences.
    """
    counts = np.zeros(data.n_items, dtype=np.float64)
    np.add.at(counts, np.fromiter((r.target for r in data.train), dtype=np.int64), 1.0)
    return counts


@register_scorer("most_popular")
class MostPopularScorer:
    """Score = number of occurrences in the training sequences (see :func:`item_counts`)."""

    name = "most_popular"

    def __init__(self) -> None:
        self.counts: np.ndarray | None = None

    def fit(self, data: LastFMData) -> None:
        self.counts = item_counts(data)

    def score(self, histories: list[list[int]], candidates: np.ndarray) -> np.ndarray:
        assert self.counts is not None, "fit first"
        return self.counts[np.asarray(candidates)]


@register_scorer("cooccurrence")
class CooccurrenceScorer:
    """score(c) = sum over history items h of the number of training users whose sequence holds
    both h and c. With ``normalize``, each count is divided by sqrt(users(h) * users(c)) (cosine).
    """

    def __init__(self, normalize: bool = False) -> None:
        self.normalize = normalize
        self.name = "cooccurrence_cosine" if normalize else "cooccurrence"
        self.C = None  # scipy.sparse csr (n_items, n_items)

    def fit(self, data: LastFMData) -> None:
        from scipy import sparse

        seqs = user_sequences(data.train)
        indptr = np.cumsum([0] + [len(set(s)) for s in seqs])
        indices = np.fromiter((i for s in seqs for i in sorted(set(s))), dtype=np.int64)
        X = sparse.csr_matrix(
            (np.ones(len(indices)), indices, indptr), shape=(len(seqs), data.n_items)
        )
        C = (X.T @ X).tocsr()
        C.setdiag(0)
        C.eliminate_zeros()
        if self.normalize:
            n = np.asarray(X.sum(axis=0)).ravel()
            inv = 1.0 / np.sqrt(np.maximum(n, 1.0))
            C = sparse.diags(inv) @ C @ sparse.diags(inv)
        self.C = C.tocsr()

    def score(self, histories: list[list[int]], candidates: np.ndarray) -> np.ndarray:
        assert self.C is not None, "fit first"
        candidates = np.asarray(candidates)
        out = np.zeros(candidates.shape, dtype=np.float64)
        for i, h in enumerate(histories):
            if h:
                out[i] = np.asarray(self.C[list(h)][:, candidates[i]].sum(axis=0)).ravel()
        return out


@register_scorer("cooccurrence_cosine")
def _cooccurrence_cosine() -> CooccurrenceScorer:
    """The cosine-normalised co-occurrence: discounts items that co-occur with everything."""
    return CooccurrenceScorer(normalize=True)


@register_scorer("sasrec")
class SASRecScorer:
    """A compact SASRec (Kang & McAuley 2018), scored by dot product with item embeddings.

    Model: item + learned position embeddings, ``blocks`` pre-norm causal self-attention blocks
    (``heads`` heads, point-wise feed-forward, residuals, dropout), a final LayerNorm, hidden
    ``dim``; inputs are the last ``max_len`` items, left-aligned as in the data, so the causal
    mask alone keeps the padding out of every real position. The output layer is the (shared)
    item embedding table.

    Training (next-item prediction, full softmax over all items, Adam): each epoch cuts every
    training user's full sequence (:func:`user_sequences`) into windows of at most ``max_len``
    inputs, at a random offset per user, and predicts the next item at *every* position. Each
    (context, next) pair of the training data is then used once per epoch, with a context of
    1..max_len items; training on the prefix rows instead would cost ~``max_len`` times more per
    epoch for the same targets. A candidate's score is the dot product of the hidden state at the
    history's last position with the candidate's embedding.

    Defaults were chosen on held-out *training* users (never on the val/test split): with
    ``lr=3e-3`` the held-out HR@1 rises until ~10-15 epochs and then stays flat; full softmax
    beat 256 sampled uniform negatives per batch at equal time.

    Seeded (``seed``); torch's global RNG state and thread count are left as they were. ``threads``
    caps torch's intra-op threads while fitting and scoring (1 is fastest for such small ops on a
    busy 2-core machine).
    """

    name = "sasrec"

    def __init__(
        self,
        dim: int = 64,
        blocks: int = 2,
        heads: int = 1,
        max_len: int = 10,
        dropout: float = 0.2,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        seed: int = 0,
        threads: int | None = 1,
    ) -> None:
        self.dim, self.blocks, self.heads, self.max_len = dim, blocks, heads, max_len
        self.dropout, self.epochs, self.batch_size = dropout, epochs, batch_size
        self.lr, self.weight_decay, self.seed, self.threads = lr, weight_decay, seed, threads
        self.model = None
        self.pad_id = -1
        self.losses: list[float] = []

    @contextmanager
    def _torch_threads(self) -> Iterator[None]:
        import torch

        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)

    def _windows(self, seqs: list[list[int]], rng: np.random.Generator):
        """(inputs, targets) ``(n_windows, max_len)`` arrays, right-padded with the pad id."""
        L, pad = self.max_len, self.pad_id
        inputs, targets = [], []
        for s in seqs:
            if len(s) < 2:
                continue
            offset = int(rng.integers(1, L + 1))  # first window: positions 0..offset-1
            starts = [0, *range(offset, len(s) - 1, L)]
            for a, b in zip(starts, [*starts[1:], len(s) - 1], strict=True):
                b = min(b, a + L, len(s) - 1)
                inputs.append(s[a:b] + [pad] * (L - (b - a)))
                targets.append(s[a + 1 : b + 1] + [pad] * (L - (b - a)))
        return np.array(inputs, dtype=np.int64), np.array(targets, dtype=np.int64)

    def _build(self, n_items: int):
        import torch
        from torch import nn
        from torch.nn import functional as F  # noqa: N812

        dim, heads, dropout = self.dim, self.heads, self.dropout

        class _Block(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
                self.qkv = nn.Linear(dim, 3 * dim)
                self.proj = nn.Linear(dim, dim)
                self.ff = nn.Sequential(
                    nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim)
                )
                self.drop = nn.Dropout(dropout)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                B, L, _ = x.shape
                q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, heads, -1).permute(2, 0, 3, 1, 4)
                a = F.scaled_dot_product_attention(
                    q, k, v, is_causal=True, dropout_p=dropout if self.training else 0.0
                )
                x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, L, dim)))
                return x + self.drop(self.ff(self.norm2(x)))

        class _SASRec(nn.Module):
            def __init__(self, blocks: int, max_len: int) -> None:
                super().__init__()
                self.item = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
                self.pos = nn.Embedding(max_len, dim)
                self.drop = nn.Dropout(dropout)
                self.blocks = nn.ModuleList(_Block() for _ in range(blocks))
                self.norm = nn.LayerNorm(dim)
                nn.init.normal_(self.item.weight, std=dim**-0.5)
                nn.init.normal_(self.pos.weight, std=dim**-0.5)
                with torch.no_grad():
                    self.item.weight[n_items].zero_()

            def forward(self, seqs: torch.Tensor) -> torch.Tensor:
                """Hidden state at every position, ``(batch, L, dim)``."""
                x = self.item(seqs) * dim**0.5 + self.pos.weight[: seqs.shape[1]]
                x = self.drop(x)
                for block in self.blocks:
                    x = block(x)
                return self.norm(x)

        return _SASRec(self.blocks, self.max_len)

    def fit(self, data: LastFMData) -> None:
        import torch
        from torch.nn import functional as F  # noqa: N812

        self.pad_id = data.pad_id
        seqs = user_sequences(data.train)
        rng = np.random.default_rng(self.seed)
        self.losses = []
        with self._torch_threads(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = self._build(data.n_items)
            opt = torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            model.train()
            for epoch in range(self.epochs):
                inputs, targets = self._windows(seqs, rng)
                order = rng.permutation(len(inputs))
                total, n = 0.0, 0
                for start in range(0, len(order), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    x, y = torch.from_numpy(inputs[idx]), torch.from_numpy(targets[idx])
                    keep = y != self.pad_id
                    h = model(x)[keep]
                    loss = F.cross_entropy(h @ model.item.weight[: data.n_items].T, y[keep])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.item() * int(keep.sum())
                    n += int(keep.sum())
                self.losses.append(total / n)
                log.info("sasrec epoch %d: loss %.4f", epoch + 1, total / n)
            model.eval()
        self.model = model

    def score(self, histories: list[list[int]], candidates: np.ndarray) -> np.ndarray:
        import torch

        assert self.model is not None, "fit first"
        seqs = np.full((len(histories), self.max_len), self.pad_id, dtype=np.int64)
        last = np.zeros(len(histories), dtype=np.int64)
        for i, h in enumerate(histories):
            h = list(h)[-self.max_len :]
            if not h:
                raise ValueError(f"history {i} is empty")
            seqs[i, : len(h)] = h
            last[i] = len(h) - 1
        with self._torch_threads(), torch.no_grad():
            h = self.model(torch.from_numpy(seqs))[torch.arange(len(seqs)), torch.from_numpy(last)]
            emb = self.model.item(torch.as_tensor(np.asarray(candidates), dtype=torch.long))
            return torch.einsum("nd,ncd->nc", h, emb).double().numpy()


# ---------------------------------------------------------------------------------- benchmark


def run_lastfm(
    data_dir: str | Path,
    split: str = "val",
    out: str | Path | None = None,
    seeds: int = 5,
    scorers: list[str] | None = None,
) -> dict:
    """Fit every scorer (all registered ones by default) on the training rows and report
    HitRatio@1 on ``split`` over candidate seeds ``0..seeds-1``; write the JSON (module doc) to
    ``out`` when given, and return it."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    names = list(SCORERS) if scorers is None else list(scorers)
    unknown = [n for n in names if n not in SCORERS]
    if unknown:
        raise ValueError(f"unknown scorers {unknown}; registered: {sorted(SCORERS)}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    with timed(seconds, "load"):
        data = load_lastfm(data_dir, split)
    seed_list = list(range(seeds))
    with timed(seconds, "candidates"):
        cand_sets = [candidate_sets(data.eval_rows, data.n_items, s) for s in seed_list]
    histories = [list(r.history) for r in data.eval_rows]
    targets = np.array([r.target for r in data.eval_rows])
    models: dict[str, dict] = {}
    for name in names:
        scorer = SCORERS[name]()
        with timed(seconds, f"fit:{name}"):
            scorer.fit(data)
        per_seed = []
        with timed(seconds, f"score:{name}"):
            for cands in cand_sets:
                per_seed.append(hit_ratio_at_1(scorer.score(histories, cands), cands, targets))
        models[name] = {
            "hr@1": float(np.mean(per_seed)),
            "hr@1_std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
            "per_seed": per_seed,
        }
        log.info("%s: HR@1 %.4f", name, models[name]["hr@1"])
    seconds["total"] = round(time.perf_counter() - start, 2)
    result = {
        "split": split,
        "seeds": seed_list,
        "dataset": {
            "n_items": data.n_items,
            "pad_id": data.pad_id,
            "train_rows": len(data.train),
            "train_users": len(user_sequences(data.train)),
            "eval_rows_total": data.eval_rows_total,
            "eval_rows": len(data.eval_rows),
            "min_len_seq": MIN_LEN_SEQ,
            "n_candidates": N_CANDIDATES,
        },
        "models": models,
        "seconds": seconds,
    }
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))
    return result


def format_table(result: dict) -> str:
    """Markdown table: one row per model, HR@1 mean ± std over the candidate seeds."""
    ds = result["dataset"]
    seconds = result.get("seconds", {})
    lines = [
        f"LastFM {result.get('split', '')}: {ds['eval_rows']} rows (len_seq >= "
        f"{ds['min_len_seq']}), {ds['n_candidates']} candidates, "
        f"{len(result.get('seeds', []))} seeds",
        "",
        "| model | HR@1 | std | fit s | score s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, m in result["models"].items():
        fit = seconds.get(f"fit:{name}", float("nan"))
        score = seconds.get(f"score:{name}", float("nan"))
        lines.append(
            f"| {name} | {m['hr@1']:.4f} | {m['hr@1_std']:.4f} | {fit:.1f} | {score:.1f} |"
        )
    return "\n".join(lines)


from llarapp.benchmark import lastfm_llara as _lastfm_llara  # noqa: E402, F401 (llara++)
