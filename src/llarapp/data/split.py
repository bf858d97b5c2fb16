"""Leakage-free split of ingested playlists into train / valid / test and challenge cases.

Files in (an ingest folder): ``playlists.parquet``, ``interactions.parquet``.
Files out (the split folder):

- ``folds.parquet``: ``pid`` (int64), ``fold`` (string: train | valid | test | distractor) for
  every playlist. Distractor playlists (``SplitConfig.distractor_frac``, none by default) are
  set aside whole: their tracks stay in the catalogue (``tracks.parquet``), so a model must
  rank the held-out playlists' new tracks among as many other unplayed ones, as a deployed
  catalogue holds, but no model ever fits on or is asked about them.
- ``cases.parquet``: one row per valid/test playlist that is long enough for some category:
  ``pid`` (int64), ``fold`` (string), ``category`` (string, one of :data:`CATEGORY_NAMES`),
  ``title`` (string, null in the no-title categories), ``seed_uris`` (list<string>: the
  visible tracks, in playlist order or drawn at random), ``hidden_uris`` (list<string>: the
  tracks to recover), ``hidden_cold`` (list<bool>: the hidden track never occurs in a training
  playlist).
- ``split.json``: the :class:`~llarapp.config.SplitConfig` used and the counts; written last
  (removed first), so its presence marks a complete split. Every file is written under a
  temporary name and renamed (:mod:`llarapp.data.atomic`): a split killed mid-write leaves no
  half-written table.

Only training playlists ever reach a model's ``fit``; a valid or test playlist shows a model
nothing but its case's title and seeds. Each eligible valid/test playlist becomes exactly one
case, in one of the ten RecSys Challenge 2018 categories, drawn so that categories fill evenly
(short playlists, which fit few categories, are placed first).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from llarapp.config import SplitConfig, to_json
from llarapp.data.atomic import replacing
from llarapp.data.schema import INTERACTIONS_FILE, PLAYLISTS_FILE, TRACKS_FILE

log = logging.getLogger(__name__)

FOLDS = ("train", "valid", "test", "distractor")
FOLDS_FILE = "folds.parquet"
CASES_FILE = "cases.parquet"
SPLIT_REPORT_FILE = "split.json"


@dataclass(frozen=True)
class Category:
    """One RecSys Challenge 2018 case type."""

    name: str
    n_seeds: int  # visible tracks
    title: bool  # whether the title is shown
    random: bool = False  # seeds drawn at random instead of the first n

    def min_tracks(self, min_hidden: int) -> int:
        """Shortest playlist that can hold this case."""
        return self.n_seeds + max(min_hidden, self.n_seeds // 2)


CATEGORIES: tuple[Category, ...] = (
    Category("title_only", 0, True),
    Category("title_first_1", 1, True),
    Category("title_first_5", 5, True),
    Category("first_5_no_title", 5, False),
    Category("title_first_10", 10, True),
    Category("first_10_no_title", 10, False),
    Category("title_first_25", 25, True),
    Category("title_random_25", 25, True, random=True),
    Category("title_first_100", 100, True),
    Category("title_random_100", 100, True, random=True),
)
CATEGORY_NAMES: tuple[str, ...] = tuple(c.name for c in CATEGORIES)

CASES_SCHEMA = pa.schema(
    [
        ("pid", pa.int64()),
        ("fold", pa.string()),
        ("category", pa.string()),
        ("title", pa.string()),
        ("seed_uris", pa.list_(pa.string())),
        ("hidden_uris", pa.list_(pa.string())),
        ("hidden_cold", pa.list_(pa.bool_())),
    ]
)


def assign_folds(pids: np.ndarray, config: SplitConfig) -> np.ndarray:
    """Seeded fold per playlist: an array of :data:`FOLDS` names aligned with ``pids`` (the
    draw of train / valid / test does not depend on ``distractor_frac``'s being 0)."""
    rng = np.random.default_rng(config.seed)
    order = rng.permutation(len(pids))
    n_test = round(len(pids) * config.test_frac)
    n_valid = round(len(pids) * config.valid_frac)
    n_distractor = round(len(pids) * config.distractor_frac)
    folds = np.full(len(pids), "train", dtype=object)
    folds[order[:n_test]] = "test"
    folds[order[n_test : n_test + n_valid]] = "valid"
    folds[order[n_test + n_valid : n_test + n_valid + n_distractor]] = "distractor"
    return folds


def assign_categories(lengths: np.ndarray, config: SplitConfig, rng: np.random.Generator) -> list:
    """A category (or None when too short for any) per playlist, filling categories evenly."""
    need = np.array([c.min_tracks(config.min_hidden) for c in CATEGORIES])
    counts = np.zeros(len(CATEGORIES), dtype=np.int64)
    chosen: list[Category | None] = [None] * len(lengths)
    # Most constrained first (fewest eligible categories), ties in random order.
    n_eligible = (lengths[:, None] >= need[None, :]).sum(axis=1)
    order = np.lexsort((rng.random(len(lengths)), n_eligible))
    for i in order:
        eligible = np.flatnonzero(lengths[i] >= need)
        if eligible.size:
            pick = eligible[np.argmin(counts[eligible])]
            counts[pick] += 1
            chosen[i] = CATEGORIES[pick]
    return chosen


def make_case(
    category: Category, uris: list[str], rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """Split one playlist's tracks into (seeds, hidden) for ``category``."""
    if category.random:
        picked = np.zeros(len(uris), dtype=bool)
        picked[rng.choice(len(uris), size=category.n_seeds, replace=False)] = True
        seeds = [u for u, p in zip(uris, picked, strict=True) if p]
        hidden = [u for u, p in zip(uris, picked, strict=True) if not p]
        return seeds, hidden
    return uris[: category.n_seeds], uris[category.n_seeds :]


def split(data_dir: Path | str, out_dir: Path | str, config: SplitConfig | None = None) -> dict:
    """Split an ingest folder into folds and challenge cases; returns the report dict.

    Raises:
        FileNotFoundError: ``data_dir`` lacks the ingest tables.
        ValueError: too few playlists to split.
    """
    config = config or SplitConfig()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    for name in (PLAYLISTS_FILE, INTERACTIONS_FILE):
        if not (data_dir / name).is_file():
            raise FileNotFoundError(f"{data_dir / name} not found: run `llarapp data ingest` first")
    playlists = pq.read_table(data_dir / PLAYLISTS_FILE, columns=["pid", "name"]).to_pandas()
    if len(playlists) < 10:
        raise ValueError(f"{data_dir}: {len(playlists)} playlists; a split needs at least 10")
    inter = pq.read_table(data_dir / INTERACTIONS_FILE).to_pandas()
    inter = inter.sort_values(["pid", "pos"], kind="stable")

    pids = playlists["pid"].to_numpy()
    folds = assign_folds(pids, config)
    fold_of = dict(zip(pids.tolist(), folds.tolist(), strict=True))
    train_pids = {p for p, f in fold_of.items() if f == "train"}
    in_train = inter["pid"].isin(train_pids).to_numpy()
    warm = set(inter.loc[in_train, "track_uri"].unique())

    held = playlists[np.isin(folds, ["valid", "test"])]
    tracks_of = {
        pid: group.tolist()
        for pid, group in inter.loc[inter["pid"].isin(held["pid"])].groupby("pid", sort=False)[
            "track_uri"
        ]
    }
    held_pids = held["pid"].to_numpy()
    lengths = np.array([len(tracks_of.get(p, ())) for p in held_pids])
    rng = np.random.default_rng([config.seed, 1])
    categories = assign_categories(lengths, config, rng)

    rows: dict[str, list] = {name: [] for name in CASES_SCHEMA.names}
    for pid, title, category in zip(held_pids, held["name"], categories, strict=True):
        if category is None:
            continue
        seeds, hidden = make_case(category, tracks_of[pid], rng)
        rows["pid"].append(int(pid))
        rows["fold"].append(fold_of[pid])
        rows["category"].append(category.name)
        rows["title"].append(title if category.title else None)
        rows["seed_uris"].append(seeds)
        rows["hidden_uris"].append(hidden)
        rows["hidden_cold"].append([u not in warm for u in hidden])

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SPLIT_REPORT_FILE).unlink(missing_ok=True)  # the report marks a complete split
    folds_table = pa.table(
        {"pid": pa.array(pids, pa.int64()), "fold": pa.array(folds, pa.string())}
    )
    with replacing(out_dir / FOLDS_FILE) as tmp:
        pq.write_table(folds_table, tmp)
    with replacing(out_dir / CASES_FILE) as tmp:
        pq.write_table(pa.table(rows, schema=CASES_SCHEMA), tmp)

    cases = pd.DataFrame({"fold": rows["fold"], "category": rows["category"]})
    cold = [c for flags in rows["hidden_cold"] for c in flags]
    report = {
        "config": to_json(config),
        "playlists": {f: int((folds == f).sum()) for f in FOLDS},
        "train_interactions": int(in_train.sum()),
        "warm_tracks": len(warm),
        "cases": {
            fold: cases.loc[cases["fold"] == fold, "category"].value_counts().to_dict()
            for fold in ("valid", "test")
        },
        "hidden_tracks": len(cold),
        "hidden_cold_share": float(np.mean(cold)) if cold else 0.0,
    }
    with replacing(out_dir / SPLIT_REPORT_FILE) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    log.info("split: %s", json.dumps(report["playlists"]))
    return report


def subset_ingest(
    data_dir: Path | str, split_dir: Path | str, folds: tuple[str, ...], out_dir: Path | str
) -> dict:
    """An ingest folder of the playlists in ``folds`` only, with the whole catalogue.

    ``playlists.parquet`` and ``interactions.parquet`` keep the rows of those playlists;
    ``tracks.parquet`` is copied whole, so every track of the source (held-out and distractor
    playlists' too) stays in the catalogue a model trained on the folder ranks. This is how a
    benchmark hands its training playlists to ``llarapp train --data``.

    Returns:
        ``{"playlists", "interactions", "tracks"}`` counts of the new folder.
    """
    data_dir, split_dir, out_dir = Path(data_dir), Path(split_dir), Path(out_dir)
    unknown = sorted(set(folds) - set(FOLDS))
    if unknown:
        raise ValueError(f"subset_ingest: unknown fold(s) {unknown}; expected some of {FOLDS}")
    fold_table = pq.read_table(split_dir / FOLDS_FILE).to_pandas()
    pids = fold_table.loc[fold_table["fold"].isin(folds), "pid"].to_numpy()
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, key in ((PLAYLISTS_FILE, "playlists"), (INTERACTIONS_FILE, "interactions")):
        table = pq.read_table(data_dir / name)
        mask = np.isin(table.column("pid").to_numpy(), pids)
        table = table.filter(pa.array(mask))
        with replacing(out_dir / name) as tmp:
            pq.write_table(table, tmp)
        counts[key] = table.num_rows
    tracks = pq.read_table(data_dir / TRACKS_FILE)
    with replacing(out_dir / TRACKS_FILE) as tmp:
        pq.write_table(tracks, tmp)
    counts["tracks"] = tracks.num_rows
    return counts
