"""Train LLaRA++ end to end: text features, ALS, projector, retriever, curriculum-trained ranker.

``llarapp train --mpd DIR --out MODEL_DIR`` (or ``--data INGEST_DIR``) runs
:func:`train_from_data`; the pipeline's train stage calls :func:`train_llara` on its split, and
the quality benchmark what ``llarapp train --data`` runs. Files out (``MODEL_DIR``): see
:class:`llarapp.models.llarapp.LlaraPP` — everything the exporter and the model servers
need. Every run is tracked in MLflow (SQLite by default): params, per-epoch metrics, the ranker.

Ranker training cases come from a share of the training playlists held out of a first,
smaller stage fit (:mod:`llarapp.training.stage`), so no case's features were computed from
its own playlist; hidden tracks of those playlists that the smaller fit never saw are cold,
which is how the ranker learns the cold path. Early stopping uses validation NDCG over the
stage of all training-fold playlists. Then the stage is refitted on every playlist given and
the ranker mapped onto its ALS basis (:func:`train_llara`): that is what is saved and served.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from llarapp.config import ALSConfig, SplitConfig
from llarapp.data.dataset import (
    Case,
    EvalCase,
    Track,
    TrainSet,
    load_cases,
    load_train,
    str_or_none,
    track_texts,
)
from llarapp.data.names import TrackNames
from llarapp.data.schema import INTERACTIONS_FILE, NEGATIVES_FILE, TRACKS_FILE
from llarapp.data.split import CATEGORIES, FOLDS, make_case, split
from llarapp.evaluation.metrics import ndcg
from llarapp.models.ann import DEFAULT_THRESHOLD as DEFAULT_ANN_THRESHOLD
from llarapp.models.llara import CONTEXT_STEPS, LlaraConfig, LlaraForCandidateScoring
from llarapp.models.llarapp import (
    Catalog,
    LlaraPP,
    Query,
    Stage,
    encode,
    ranker_inputs,
    retrieve,
)
from llarapp.models.llarapp.model import build_indexes
from llarapp.models.projector import ProjectorConfig
from llarapp.models.retriever import FEATURES
from llarapp.text import TextEncoder, default_cache_dir
from llarapp.training.stage import align, build_stage, subset

log = logging.getLogger(__name__)
CURRICULA = ("linear", "none", "text-only")
FITTED_FOLDS = tuple(f for f in FOLDS if f != "distractor")
"""The folds the served model is refitted on: every playlist given but set-aside distractors."""


@dataclass(frozen=True)
class LlaraTrainConfig:
    """Everything ``llarapp train`` decides; saved next to the model."""

    als: ALSConfig = field(
        # the benchmark's tuned ALS (see README)
        default_factory=lambda: ALSConfig(factors=128, regularization=0.3, alpha=20.0, bm25=False)
    )
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    knn_alpha: float = 0.2  # item-kNN exponent inside the retriever
    n_candidates: int = 800  # retriever output N
    ann_threshold: int = DEFAULT_ANN_THRESHOLD  # catalogues / title sets with more rows are
    # searched by an approximate index (llarapp.models.ann), saved beside the model
    rank_share: float = 0.25  # one fold: training playlists held out of a stage -> ranker cases
    rank_folds: int = 1  # folds giving ranker cases, each retrieved by a stage fitted without
    # it (cross-fitting; rank_folds * rank_share <= 1): 4 x 0.25 draws cases from every playlist,
    # at 4x the case retrieval and one more stage fit per fold
    max_rank_playlists: int = 4000  # at most this many in all folds (their cases' retrieval is
    # most of the fold stages' time at scale: 100 k playlists would otherwise give 600 k cases)
    cases_per_playlist: int = 6  # challenge-style cases drawn per held-out playlist
    max_seeds: int = 50  # the last seeds the ranker reads
    hard_negatives: int = 64  # top retrieved non-hidden candidates per case and step (and as
    # many drawn from the rest of the candidate list, the ranks the ranker also sorts)
    random_negatives: int = 32  # uniform over the catalogue per case and step
    max_positives: int = 32
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    epochs: int = 10  # 0: no gradient step, the ranker is its tuned feature head alone
    batch_size: int = 32
    lr: float = 3e-4  # the transformer and candidate tower
    finetune_lr: float = 3e-3  # the same when fine-tuning a base_model (adapters learn fast)
    feature_lr: float = 1e-2  # the feature head: the retrieval features' learned combination
    weight_decay: float = 0.05
    patience: int = 3  # epochs without validation NDCG gain before stopping
    curriculum: str = "linear"  # linear: P(hybrid) 0 -> 1; none: always hybrid; text-only: no
    # behavior vectors at all, in tokens or retrieval (Stage.without_behavior)
    max_valid_cases: int = 400
    lora_r: int = 8  # fine-tuning a previous model (base_model): LoRA rank, 0 = every weight
    # what one listener's vote weighs: each feedback case (negatives.parquet) this often per
    # epoch, each fresh playlist (likes) this often in the fitted matrices (load_train)
    feedback_repeat: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.curriculum not in CURRICULA:
            raise ValueError(f"curriculum={self.curriculum!r}: expected one of {CURRICULA}")
        if not 0 < self.rank_share < 1:
            raise ValueError(f"rank_share={self.rank_share}: expected 0 < x < 1")
        for name in (
            "n_candidates", "max_seeds", "batch_size", "cases_per_playlist", "feedback_repeat",
            "max_rank_playlists", "rank_folds",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"LlaraTrainConfig.{name}={getattr(self, name)}: expected >= 1")
        if self.rank_folds * self.rank_share > 1 + 1e-9:
            raise ValueError(
                f"rank_folds={self.rank_folds} x rank_share={self.rank_share} > 1: "
                "the folds are disjoint shares of the training playlists"
            )
        if self.epochs < 0:
            raise ValueError(f"LlaraTrainConfig.epochs={self.epochs}: expected >= 0")
        if self.lora_r < 0:
            raise ValueError(f"LlaraTrainConfig.lora_r={self.lora_r}: expected >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LlaraTrainConfig:
        """Fields of ``data`` over this class's defaults, nested ones too: a partial ``als``
        keeps the tuned ALS defaults above, not ``ALSConfig``'s own."""
        data, base = dict(data), cls()
        data["als"] = ALSConfig(**{**dataclasses.asdict(base.als), **data.get("als", {})})
        data["projector"] = ProjectorConfig(
            **{**dataclasses.asdict(base.projector), **data.get("projector", {})}
        )
        return cls(**data)


@dataclass
class RankCase:
    """One case, retrieved: ranker inputs as arrays plus labels."""

    title_vec: np.ndarray | None
    seed_idx: np.ndarray  # (S,) catalogue indices of the known seeds the ranker reads
    candidates: np.ndarray  # (N,)
    features: np.ndarray  # (N, F)
    hidden: np.ndarray  # catalogue indices of hidden tracks
    queries: np.ndarray  # (2, f) seed / title query (zeros when absent)
    scales: np.ndarray  # (2,) feature scale of the seed / title scores (random negatives)
    query: Query  # what was retrieved for (the text-only ablation retrieves it again)
    seed_text: np.ndarray | None  # (U, text_dim) unknown seeds the ranker reads (text-only)
    negatives: np.ndarray = field(  # catalogue indices a listener disliked here (feedback)
        default_factory=lambda: np.zeros(0, np.int64)
    )
    fold: int = 0  # which of Prepared.fold_stages retrieved it (its indices are that stage's)


def p_hybrid(curriculum: str, step: int, ramp_steps: float) -> float:
    """Probability that a batch uses hybrid (text + behavior) tokens at ``step``: ``linear``
    rises from 0 to 1 over ``ramp_steps``; ``none`` is always hybrid, ``text-only`` never."""
    if curriculum == "text-only":
        return 0.0
    if curriculum == "none":
        return 1.0
    return min(1.0, step / max(1, ramp_steps))


def make_rank_case(stage: Stage, q: Query, hidden: np.ndarray, max_seeds: int) -> RankCase:
    """``q`` retrieved by ``stage`` (the inference step :func:`retrieve`), labelled with
    ``hidden``."""
    c = retrieve(stage, q, max_seeds)
    f = stage.behavior.shape[1]
    queries = np.zeros((2, f), dtype=np.float32)
    scales = np.ones(2, dtype=np.float32)
    for j, vec in enumerate((c.seed_query, c.title_query)):
        if vec is not None:
            queries[j] = vec
            scores = stage.behavior[c.candidates] @ vec
            scales[j] = max(float(np.abs(scores).max()), 1e-6) if len(scores) else 1.0
    return RankCase(
        title_vec=q.title_vec,
        seed_idx=c.rank_seed_idx,
        candidates=c.candidates,
        features=c.features,
        hidden=hidden,
        queries=queries,
        scales=scales,
        query=q,
        seed_text=c.rank_seed_text,
    )


class RankerBatcher:
    """Turns :class:`RankCase` lists into ranker tensors for one stage."""

    def __init__(self, stage: Stage, config: LlaraTrainConfig) -> None:
        self.stage, self.config = stage, config
        self.text = np.ascontiguousarray(stage.catalog.text, dtype=np.float32)
        self.behavior = np.ascontiguousarray(stage.behavior, dtype=np.float32)
        self.log_pop = stage.retriever.log_pop / max(float(stage.retriever.log_pop.max()), 1e-6)

    def batch(
        self,
        cases: list[RankCase],
        hybrid: bool,
        rng: np.random.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Tensors for ``cases`` (:func:`ranker_inputs`); with ``rng`` (training) candidates
        are sampled and labelled."""
        picks = [
            self._pick(rc, rng) if rng is not None else (rc.candidates, rc.features) for rc in cases
        ]
        inputs = ranker_inputs(
            self.text,
            self.behavior,
            [rc.title_vec for rc in cases],
            [rc.seed_idx for rc in cases],
            [cands for cands, _ in picks],
            [feats for _, feats in picks],
            hybrid,
            seed_texts=[rc.seed_text for rc in cases],
        )
        labels = np.zeros_like(inputs["cand_mask"])
        for i, (rc, (cands, _)) in enumerate(zip(cases, picks, strict=True)):
            labels[i, : len(cands)] = np.isin(cands, rc.hidden)
            labels[i, : len(cands)] -= np.isin(cands, rc.negatives)  # explicit negatives: -1
        return {k: torch.from_numpy(v) for k, v in (inputs | {"labels": labels}).items()}

    def _pick(self, rc: RankCase, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        is_pos = np.isin(rc.candidates, rc.hidden)
        pos = np.flatnonzero(is_pos)
        if len(pos) > c.max_positives:
            pos = rng.choice(pos, c.max_positives, replace=False)
        negs = np.flatnonzero(~is_pos)  # candidates are best-first
        hard = negs[: c.hard_negatives]
        rest = negs[c.hard_negatives :]
        deep = rng.choice(rest, min(len(rest), c.hard_negatives), replace=False)
        chosen = np.concatenate([pos, hard, deep])
        disliked = np.flatnonzero(np.isin(rc.candidates, rc.negatives))  # always in the batch
        chosen = np.concatenate([chosen, disliked[~np.isin(disliked, chosen)]])
        cands, feats = rc.candidates[chosen], rc.features[chosen]
        n_items = len(self.stage.behavior)
        rand = rng.integers(0, n_items, c.random_negatives)
        rand = rand[~np.isin(rand, rc.hidden) & ~np.isin(rand, rc.candidates)]
        rand = rand[~np.isin(rand, rc.seed_idx)]
        if len(rand):
            rf = np.zeros((len(rand), len(FEATURES)), dtype=np.float32)
            # outside every source's top N: the dense scores are exact, the kNN votes ~ 0
            rf[:, :2] = (self.stage.behavior[rand] @ rc.queries.T) / rc.scales
            rf[:, 0] *= np.abs(rc.features[:, 0]).max() > 0  # source absent for this case
            rf[:, 1] *= np.abs(rc.features[:, 1]).max() > 0
            rf[:, FEATURES.index("log_popularity")] = self.log_pop[rand]
            rf[:, FEATURES.index("is_cold")] = self.stage.retriever.is_cold[rand]
            cands = np.concatenate([cands, rand])
            feats = np.concatenate([feats, rf])
        return cands, feats


#: Coordinate-ascent grid of a feature weight, relative to the strongest single feature's 1.0.
WEIGHT_GRID = (0.0, 0.03, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5)


class CaseNDCG:
    """Mean NDCG@k of ranking each case's candidates by a linear blend of their features (the
    metric's definition: hidden tracks outside the candidates count in the ideal DCG), over
    padded arrays so one blend costs one matrix product and one sort."""

    def __init__(self, cases: list[RankCase], k: int = 500) -> None:
        n = max(len(rc.candidates) for rc in cases)
        self.features = np.zeros((len(cases), n, len(FEATURES)), np.float32)
        self.labels = np.zeros((len(cases), n), bool)
        self.valid = np.zeros((len(cases), n), bool)
        discount = 1.0 / np.log2(np.arange(2, k + 2))
        self.ideal = np.empty(len(cases))
        for i, rc in enumerate(cases):
            m = len(rc.candidates)
            self.features[i, :m], self.valid[i, :m] = rc.features, True
            self.labels[i, :m] = np.isin(rc.candidates, rc.hidden)
            self.ideal[i] = discount[: min(len(np.unique(rc.hidden)), k)].sum()
        self.k, self.discount = min(k, n), discount[: min(k, n)]

    def __call__(self, weights: np.ndarray) -> float:
        scores = np.where(self.valid, self.features @ weights.astype(np.float32), -np.inf)
        top = np.argsort(-scores, axis=1, kind="stable")[:, : self.k]
        hits = np.take_along_axis(self.labels, top, axis=1)
        return float(np.mean((hits * self.discount).sum(axis=1) / self.ideal))


def tune_feature_weights(cases: list[RankCase], passes: int = 2) -> tuple[np.ndarray, list[dict]]:
    """Weights of the retrieval features (a linear ranker) by coordinate ascent on NDCG@500.

    Starts from the best single feature; each pass tries :data:`WEIGHT_GRID` for every other
    feature in turn and keeps what raises NDCG. The result initialises the ranker's feature
    head, so training starts from the best linear blend of the sources.

    Returns:
        ``(weights (len(FEATURES),), trials)``.
    """
    cases = [rc for rc in cases if len(rc.hidden)]
    if not cases:
        raise ValueError("tune_feature_weights: no case with a hidden track")
    trials: list[dict] = []
    case_ndcg = CaseNDCG(cases)

    def value(w: np.ndarray) -> float:
        v = case_ndcg(w)
        trials.append({"weights": [round(float(x), 3) for x in w], "ndcg": v})
        return v

    singles = [value(np.eye(len(FEATURES))[j]) for j in range(len(FEATURES))]
    anchor = int(np.argmax(singles))
    w, best = np.eye(len(FEATURES))[anchor], max(singles)
    for _ in range(passes):
        improved = False
        for j in range(len(FEATURES)):
            if j == anchor:
                continue
            for x in WEIGHT_GRID:
                if x == w[j]:
                    continue
                trial = w.copy()
                trial[j] = x
                v = value(trial)
                if v > best + 1e-6:
                    w, best, improved = trial, v, True
        if not improved:
            break
    log.info(
        "feature weights %s: NDCG %.4f (best single %s %.4f)",
        w,
        best,
        FEATURES[anchor],
        singles[anchor],
    )
    return w.astype(np.float32), sorted(trials, key=lambda t: -t["ndcg"])[:20]


#: A context (:data:`CONTEXT_STEPS`) with fewer training cases starts at the blend of all cases.
MIN_CONTEXT_CASES = 100


def context_of(rc: RankCase) -> int:
    """Which of the ranker's seed-count contexts ``rc`` is in: how many of
    :data:`CONTEXT_STEPS` the number of seed tokens it reads reaches (0: title only)."""
    n = len(rc.seed_idx) + (0 if rc.seed_text is None else len(rc.seed_text))
    return sum(n >= t for t in CONTEXT_STEPS)


def tune_context_weights(cases: list[RankCase]) -> np.ndarray:
    """``(len(CONTEXT_STEPS) + 1, len(FEATURES))``: :func:`tune_feature_weights` on the cases
    of each seed-count context (row k: :func:`context_of` k), the blend of all cases for a
    context with fewer than :data:`MIN_CONTEXT_CASES`. Which source to trust moves with the
    number of seeds (on mpd-dev: the artist and item co-occurrence sources carry one seed, the
    ALS fold-in many)."""
    weights, _ = tune_feature_weights(cases)
    contexts = np.array([context_of(rc) for rc in cases])
    rows = []
    for k in range(len(CONTEXT_STEPS) + 1):
        mine = [rc for rc, c in zip(cases, contexts, strict=True) if c == k and len(rc.hidden)]
        rows.append(tune_feature_weights(mine)[0] if len(mine) >= MIN_CONTEXT_CASES else weights)
    return np.stack(rows).astype(np.float32)


def rank_scores(model: LlaraForCandidateScoring, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    return model(**inputs).scores


@torch.inference_mode()
def valid_ndcg(
    model,
    batcher: RankerBatcher,
    cases: list[RankCase],
    hybrid: bool,
    device: torch.device | str = "cpu",
) -> float:
    model.eval()
    values = []
    for start in range(0, len(cases), 16):
        chunk = cases[start : start + 16]
        batch = {k: v.to(device) for k, v in batcher.batch(chunk, hybrid).items()}
        scores = rank_scores(model, batch).float().cpu().numpy()
        for rc, s in zip(chunk, scores, strict=True):
            order = rc.candidates[np.argsort(-s[: len(rc.candidates)], kind="stable")]
            values.append(ndcg(order[:500].tolist(), rc.hidden.tolist(), k=500))
    return float(np.mean(values))


def ranker_cases_from_playlists(
    stage: Stage,
    playlists: list[list[str]],
    titles: list[str],
    title_vecs: np.ndarray,
    config: LlaraTrainConfig,
    fold: int = 0,
) -> list[RankCase]:
    """Challenge-style cases from training playlists (ordered URIs, titles and their
    vectors) that ``stage`` never fitted (``fold``: which fold stage ``stage`` is)."""
    rng = np.random.default_rng([config.seed, 11, fold])
    split_cfg = SplitConfig()
    cases = []
    for uris, title, title_vec in tqdm(
        zip(playlists, titles, title_vecs, strict=True),
        total=len(playlists),
        desc="ranker cases",
        leave=False,
    ):
        eligible = [c for c in CATEGORIES if len(uris) >= c.min_tracks(split_cfg.min_hidden)]
        if not eligible:
            continue
        for k in rng.choice(
            len(eligible), min(config.cases_per_playlist, len(eligible)), replace=False
        ):
            cat = eligible[k]
            seeds, hidden = make_case(cat, uris, rng)
            case = Case(title if cat.title else None, tuple(Track("", "", u) for u in seeds))
            q = encode(stage, case, lambda _, v=title_vec: v[None])  # the title is the one text
            hid = np.array([stage.catalog.index[u] for u in hidden], dtype=np.int64)
            rc = make_rank_case(stage, q, hid, config.max_seeds)
            rc.fold = fold
            cases.append(rc)
    return cases


@dataclass
class Prepared:
    """Everything ranker training needs; shared by the ablations of one benchmark run."""

    fold_stages: list[Stage]  # fold k's stage was fitted without the playlists of fold k
    stage: Stage  # fitted on every training playlist (served)
    train_cases: list[RankCase]
    valid_cases: list[RankCase]
    feature_weights: np.ndarray  # the feature head's start (tune_context_weights on train_cases)
    seconds: dict[str, float]
    feedback_cases: int = 0  # of train_cases, from listeners' feedback (before repeats)

    def without_behavior(self, max_seeds: int) -> Prepared:
        """The same cases retrieved again by both stages without behavior vectors
        (:meth:`Stage.without_behavior`): what the ``text-only`` curriculum trains on."""
        if not self.stage.fold_in:
            return self
        t = time.perf_counter()
        folds = [st.without_behavior() for st in self.fold_stages]
        stage = self.stage.without_behavior()

        def again(st: Stage, rc: RankCase) -> RankCase:
            return dataclasses.replace(
                make_rank_case(st, rc.query, rc.hidden, max_seeds), fold=rc.fold
            )

        train_cases = [again(folds[rc.fold], rc) for rc in self.train_cases]
        weights = tune_context_weights(train_cases)
        seconds = {**self.seconds, "without_behavior": time.perf_counter() - t}
        return dataclasses.replace(
            self,
            fold_stages=folds,
            stage=stage,
            train_cases=train_cases,
            valid_cases=[again(stage, rc) for rc in self.valid_cases],
            feature_weights=weights,
            seconds=seconds,
        )


def prepare_llara(
    data_dir: Path | str,
    split_dir: Path | str,
    config: LlaraTrainConfig,
    encoder: TextEncoder | None = None,
) -> Prepared:
    """Text features, both stages, ranker training cases and validation cases of an ingest
    folder's training fold (validation cases: the split's ``valid`` fold)."""
    data_dir, split_dir = Path(data_dir), Path(split_dir)
    encoder = encoder or TextEncoder(default_cache_dir())
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    train = load_train(data_dir, split_dir, fresh_weight=config.feedback_repeat)
    tracks = pq.read_table(data_dir / TRACKS_FILE).to_pandas()
    catalog = _catalog(
        tracks["track_uri"].to_numpy(dtype=str),
        track_texts(tracks),
        tracks["artist_name"].map(str_or_none).fillna("").to_numpy(dtype=str),
        encoder,
    )
    title_vecs = encoder.encode([str(t) for t in train.titles])
    valid = load_cases(data_dir, split_dir, "valid", config.max_valid_cases)
    encoder.flush()
    seconds["text_features"] = time.perf_counter() - t
    inter = pq.read_table(data_dir / INTERACTIONS_FILE).to_pandas()
    inter = inter[inter["pid"].isin(train.pids)].sort_values(["pid", "pos"])
    ordered = inter.groupby("pid")["track_uri"].apply(list)  # training playlists only
    prepared = _prepare(train, catalog, title_vecs, ordered, valid, config, encoder, seconds)
    feedback = feedback_cases(
        prepared.fold_stages[0], data_dir, set(train.pids.tolist()), config, encoder
    )
    prepared.train_cases += feedback * config.feedback_repeat
    prepared.feedback_cases = len(feedback)
    return prepared


def feedback_cases(
    stage: Stage,
    data_dir: Path | str,
    train_pids: set[int],
    config: LlaraTrainConfig,
    encoder: TextEncoder,
) -> list[RankCase]:
    """Ranker cases from listeners' feedback: the ingest folder's ``negatives.parquet``
    (``ingest(..., feedback=...)``), one case per playlist context with a dislike.

    The context's title and seeds are retrieved by ``stage``; the tracks it liked (its fresh
    playlist after the seeds) are the positives, the tracks it disliked explicit negatives
    (:func:`~llarapp.models.llara.modeling_llara.hard_negative_loss`). A context whose fresh
    playlist is outside the training fold is left out: its likes are held-out cases.
    """
    path = Path(data_dir) / NEGATIVES_FILE
    if not path.is_file():
        return []
    negatives = pq.read_table(path).to_pandas()
    inter = pq.read_table(Path(data_dir) / INTERACTIONS_FILE).to_pandas()
    fresh = inter[inter["pid"].isin(negatives["pid"].dropna())].sort_values(["pid", "pos"])
    fresh_tracks = fresh.groupby("pid")["track_uri"].apply(list)
    context = (
        negatives["pid"]
        .astype("Int64")
        .astype(str)
        .where(negatives["pid"].notna(), negatives["playlist_id"].fillna(negatives["request_id"]))
    )
    cases = []
    for _, rows in negatives.groupby(context, sort=False):
        first = rows.iloc[0]
        pid = None if pd.isna(first["pid"]) else int(first["pid"])
        if pid is not None and pid not in train_pids:
            continue
        seeds = [str(u) for u in first["seed_uris"]]
        title = str_or_none(first["title"])
        if title is None and not seeds:
            continue  # nothing to retrieve for
        index = stage.catalog.index
        liked = [index[u] for u in fresh_tracks.get(pid, []) if u not in set(seeds) and u in index]
        disliked = [index[u] for u in rows["track_uri"].unique() if u in index]
        if not disliked:
            continue
        contexts = [seeds]
        if seeds and title is not None:  # the vote speaks for the title's other requests too
            contexts.append([])
        for seed_uris in contexts:
            case = Case(title, tuple(Track("", "", u) for u in seed_uris))
            q = encode(stage, case, encoder.encode)
            rc = make_rank_case(stage, q, np.array(liked, np.int64), config.max_seeds)
            rc.negatives = np.array(disliked, np.int64)
            cases.append(rc)
    log.info("%d feedback cases from %d disliked tracks", len(cases), len(negatives))
    return cases


def prepare_trainset(
    train: TrainSet, config: LlaraTrainConfig, encoder: TextEncoder | None = None
) -> Prepared:
    """:func:`prepare_llara` for a :class:`TrainSet` alone (``LlaraPP.fit``): the catalogue is
    its tracks, a playlist's order is its tracks' column order, and the validation cases are
    cases of the ranker-case playlists retrieved by the full stage, which has seen them (there
    is no held-out fold): early stopping is optimistic. ``llarapp train`` is the real path."""
    encoder = encoder or TextEncoder(default_cache_dir())
    t = time.perf_counter()
    texts = [
        Track(str(n), str(a), album_name=str_or_none(al)).text
        for n, a, al in zip(train.track_names, train.artist_names, train.album_names, strict=True)
    ]
    artists = np.array([str_or_none(a) or "" for a in train.artist_names], dtype=str)
    catalog = _catalog(train.track_uris.astype(str), texts, artists, encoder)
    title_vecs = encoder.encode([str(t) for t in train.titles])
    seconds = {"text_features": time.perf_counter() - t}
    rows = [train.matrix.indices[a:b] for a, b in itertools.pairwise(train.matrix.indptr)]
    ordered = {
        p: train.track_uris[r].astype(str).tolist() for p, r in zip(train.pids, rows, strict=True)
    }
    return _prepare(train, catalog, title_vecs, ordered, None, config, encoder, seconds)


def _catalog(uris: np.ndarray, texts: list[str], artists: np.ndarray, encoder) -> Catalog:
    # stored as float16 with the model: train on exactly what is served
    text = encoder.encode(texts).astype(np.float16).astype(np.float32)
    return Catalog(uris, text, artists)


def _prepare(
    train: TrainSet,
    catalog: Catalog,
    title_vecs: np.ndarray,
    ordered: Mapping[int, list[str]],
    valid: list[EvalCase] | None,
    config: LlaraTrainConfig,
    encoder: TextEncoder,
    seconds: dict[str, float],
) -> Prepared:
    """The fold stages and the full stage, the ranker's training cases (from ``ordered``, each
    playlist's track URIs in order) and validation cases (``valid``; None: see
    :func:`prepare_trainset`).

    Cross-fitting: ``rank_folds`` disjoint folds of the training playlists (each
    ``rank_share`` of them, all folds together at most ``max_rank_playlists``); fold k's
    cases are retrieved by a stage fitted on every other training playlist, so no case's
    features come from its own playlist, and each fold stage is rotated into the full
    stage's ALS basis, the one the ranker reads when serving."""
    rng = np.random.default_rng(config.seed)
    perm = rng.permutation(len(train.pids))
    size = min(int(len(perm) * config.rank_share), config.max_rank_playlists // config.rank_folds)
    folds = [np.sort(perm[k * size : (k + 1) * size]) for k in range(config.rank_folds)]
    fold_stages, train_cases = [], []
    t = time.perf_counter()
    for k, rank_rows in enumerate(folds):
        fit_rows = np.setdiff1d(np.arange(len(perm)), rank_rows)
        stage_k = build_stage(
            subset(train, fit_rows),
            catalog,
            title_vecs[fit_rows],
            config.als,
            config.projector,
            config.knn_alpha,
            config.n_candidates,
        )
        build_indexes(stage_k, config.ann_threshold)  # cases retrieved as the server retrieves
        playlists = (
            [ordered[p] for p in train.pids[rank_rows]],
            [str_or_none(t) or "" for t in train.titles[rank_rows]],
            title_vecs[rank_rows],
        )
        train_cases += ranker_cases_from_playlists(stage_k, *playlists, config, fold=k)
        fold_stages.append(stage_k)
    seconds["fold_stages"] = time.perf_counter() - t

    t = time.perf_counter()
    stage = build_stage(
        train,
        catalog,
        title_vecs,
        config.als,
        config.projector,
        config.knn_alpha,
        config.n_candidates,
    )
    build_indexes(stage, config.ann_threshold)
    if valid is None:
        valid_cases = ranker_cases_from_playlists(stage, *playlists, config)  # the last fold's
    else:
        valid_cases = [
            make_rank_case(
                stage,
                encode(stage, ec.case, encoder.encode),
                np.array([stage.catalog.index[u] for u in ec.hidden], dtype=np.int64),
                config.max_seeds,
            )
            for ec in valid
        ]
    rotations = [align(stage_k, stage) for stage_k in fold_stages]  # the ranker reads one
    for stage_k, rotation in zip(fold_stages, rotations, strict=True):  # basis, train and serve
        index = stage_k.retriever.behavior_index
        stage_k.behavior = stage_k.behavior @ rotation
        stage_k.retriever.behavior = stage_k.behavior  # which drops its index of the old vectors
        stage_k.retriever.playlist_vectors = stage_k.retriever.playlist_vectors @ rotation
        if index is not None:
            stage_k.retriever.behavior_index = index.rotated(rotation)
    for rc in train_cases:
        rc.queries = rc.queries @ rotations[rc.fold]
    seconds["stage_full"] = time.perf_counter() - t
    t = time.perf_counter()
    weights = tune_context_weights(train_cases)
    seconds["feature_weights"] = time.perf_counter() - t
    return Prepared(fold_stages, stage, train_cases, valid_cases, weights, seconds)


def train_llara(
    data_dir: Path | str,
    split_dir: Path | str,
    out_dir: Path | str,
    config: LlaraTrainConfig | None = None,
    *,
    encoder: TextEncoder | None = None,
    tracking_uri: str | None = None,
    prepared: Prepared | None = None,
    base_model: Path | str | None = None,
    refit: bool = True,
    split_run_dir: Path | str | None = None,
):
    """Train every part of LLaRA++ and save it to ``out_dir``.

    Settings are chosen on the split: the ranker learns from cases of training-fold playlists
    and stops early on the validation cases (the *split run*, whose features, ALS,
    co-occurrence, title index and artist statistics come from the training fold). With
    ``refit`` (the default) those are then fitted again on every playlist of the ingest folder
    but the split's distractors (:func:`refit_stage`) and the split run's ranker reads them
    through a Procrustes map of the new ALS basis: what is saved and served has learned from
    all the data given, while no ranker case ever had features from its own playlist.
    ``split_run_dir`` keeps the split run's model too; it is the one to score on the split's
    test fold (the refitted model has seen those playlists).

    With ``base_model`` (a previous MODEL_DIR) this is the retraining path: features, ALS and
    the projector are fitted on the new data as usual, and the previous ranker is fine-tuned on
    them — with LoRA adapters on every decoder projection (``config.lora_r``), merged back into
    plain weights before saving, so export and serving see an ordinary ranker. The new ALS
    basis is mapped onto the previous one (Procrustes) inside the ranker's behavior projection.

    Returns:
        The trained :class:`~llarapp.models.llarapp.LlaraPP` (its ``report`` says what
        training measured and how many playlists it fitted on; ``train_report.json`` in
        ``out_dir`` holds the same).
    """
    config = config or LlaraTrainConfig()
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    encoder = encoder or TextEncoder(default_cache_dir())
    previous = _load_previous(base_model) if base_model is not None else None
    prepared = prepared or prepare_llara(data_dir, split_dir, config, encoder)
    tracks = pq.read_table(Path(data_dir) / TRACKS_FILE)
    names = TrackNames.from_table(tracks, prepared.stage.catalog.uris)
    llara = _fit_prepared(prepared, config, names, encoder, tracking_uri, previous)
    n_split = prepared.stage.report["playlists"]
    llara.report["playlists"] = {"split_run": n_split, "served": n_split}
    if split_run_dir is not None:
        _save(llara, split_run_dir)
    if refit:
        stage = refit_stage(data_dir, split_dir, llara.stage, config, encoder)
        ranker = rebase_ranker(copy.deepcopy(llara.ranker), llara.stage, stage)
        n_all = stage.report["playlists"]
        report = {
            **llara.report,
            "playlists": {"split_run": n_split, "served": n_all},
            "stage": stage.report,
            "split_run_stage": llara.report["stage"],
        }
        names = TrackNames.from_table(tracks, stage.catalog.uris)
        llara = LlaraPP.from_parts(stage, ranker, config, report, names, encoder)
    _save(llara, out_dir)
    log.info(
        "llara++ trained in %.0f s on %d playlists -> %s (ranker: %s)",
        time.perf_counter() - start,
        llara.report["playlists"]["served"],
        out_dir,
        llara.report["ranker"],
    )
    return llara


def training_split(data_dir: Path | str, work_dir: Path | str, seed: int = 0) -> Path:
    """The split ``llarapp train`` chooses settings on: ``SplitConfig(seed=seed)`` of an
    ingest folder, written to ``work_dir/split``."""
    split_dir = Path(work_dir) / "split"
    split(data_dir, split_dir, SplitConfig(seed=seed))
    return split_dir


def train_from_data(
    data_dir: Path | str,
    out_dir: Path | str,
    config: LlaraTrainConfig | None = None,
    *,
    work_dir: Path | str,
    **kwargs: Any,
):
    """``llarapp train``: :func:`train_llara` on the :func:`training_split` of an ingest
    folder, refitted on every playlist of it; ``kwargs`` go to :func:`train_llara`."""
    config = config or LlaraTrainConfig()
    split_dir = training_split(data_dir, work_dir, config.seed)
    return train_llara(data_dir, split_dir, out_dir, config, **kwargs)


def _save(llara: LlaraPP, out_dir: Path | str) -> None:
    out_dir = Path(out_dir)
    llara.save(out_dir)
    (out_dir / "train_report.json").write_text(json.dumps(llara.report, indent=2, default=float))


def refit_stage(
    data_dir: Path | str,
    split_dir: Path | str,
    fitted: Stage,
    config: LlaraTrainConfig,
    encoder: TextEncoder,
) -> Stage:
    """The retrieval stage fitted again on every playlist of ``data_dir`` but the split's
    distractors, over ``fitted``'s catalogue (without behavior vectors for the ``text-only``
    curriculum, as ``fitted`` is then)."""
    everything = load_train(
        data_dir, split_dir, folds=FITTED_FOLDS, fresh_weight=config.feedback_repeat
    )
    stage = build_stage(
        everything,
        fitted.catalog,
        encoder.encode([str(t) for t in everything.titles]),
        config.als,
        config.projector,
        config.knn_alpha,
        config.n_candidates,
    )
    encoder.flush()
    return stage if fitted.fold_in else stage.without_behavior()


def rebase_ranker(
    ranker: LlaraForCandidateScoring, source: Stage, target: Stage
) -> LlaraForCandidateScoring:
    """``ranker`` (trained on ``source``'s behavior vectors) reading ``target``'s: its behavior
    projection absorbs the Procrustes map between the two ALS bases, in place."""
    if ranker.config.behavior_dim != target.behavior.shape[1]:
        raise ValueError(
            f"ranker: behavior_dim {ranker.config.behavior_dim}, the new ALS has "
            f"{target.behavior.shape[1]} factors; retrain with the same ALS factors"
        )
    # new = old @ R on shared tracks, so old = new @ R.T and W @ old.T = (W @ R) @ new.T
    rotation = torch.from_numpy(align(source, target))
    with torch.no_grad():
        proj = ranker.model.item_embeddings.behavior_proj
        proj.weight.copy_(proj.weight @ rotation)
    return ranker


def on_stage(champion: LlaraPP, candidate: LlaraPP) -> LlaraPP:
    """``champion``'s ranker reading ``candidate``'s stage (features, ALS mapped by Procrustes,
    retrieval, catalogue): the champion as it ranks on the playlists the candidate was fitted
    on. A gate compares this with the candidate when the champion has itself fitted the
    candidate's test playlists (a retrain on data that holds the champion's own)."""
    ranker = rebase_ranker(copy.deepcopy(champion.ranker), champion.stage, candidate.stage)
    config = LlaraTrainConfig.from_dict(champion.config)
    return LlaraPP.from_parts(
        candidate.stage, ranker, config, champion.report, candidate.names, candidate.encoder
    )


def _fit_prepared(
    prepared: Prepared,
    config: LlaraTrainConfig,
    names: TrackNames,
    encoder: TextEncoder,
    tracking_uri: str | None = None,
    previous: LlaraPP | None = None,
) -> LlaraPP:
    """The ranker trained on ``prepared`` (fine-tuned from ``previous``'s when given), and the
    :class:`LlaraPP` of it with its training report."""
    if config.curriculum == "text-only":
        prepared = prepared.without_behavior(config.max_seeds)
    init = _previous_ranker(previous, prepared.stage) if previous is not None else None
    t = time.perf_counter()
    model, history = train_ranker(
        prepared.fold_stages,
        prepared.stage,
        prepared.train_cases,
        prepared.valid_cases,
        config,
        tracking_uri,
        init=init,
        feature_weights=prepared.feature_weights,
    )
    seconds = {**prepared.seconds, "ranker": time.perf_counter() - t}
    valid = prepared.valid_cases
    recall = float(np.mean([np.isin(rc.hidden, rc.candidates).mean() for rc in valid]))
    report = {
        "config": config.to_dict(),
        "ranker": ships(history[-1]["best_epoch"]),
        "train_cases": len(prepared.train_cases),
        "feedback_cases": prepared.feedback_cases,
        "valid_cases": len(valid),
        "retriever_recall_valid": recall,
        "stage": prepared.stage.report,
        "history": history,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    return LlaraPP.from_parts(prepared.stage, model, config, report, names, encoder)


def fit_trainset(model: LlaraPP, train: TrainSet) -> None:
    """``LlaraPP.fit``: train ``model`` (its config, a :class:`LlaraTrainConfig` dict) on
    ``train`` alone (:func:`prepare_trainset`), tracked in MLflow as ``llarapp train`` is."""
    config = LlaraTrainConfig.from_dict(model.config)
    torch.manual_seed(config.seed)
    encoder = model.encoder
    prepared = prepare_trainset(train, config, encoder)
    table = pa.table(
        {
            "track_uri": train.track_uris.astype(str),
            "track_name": [str_or_none(x) or "" for x in train.track_names],
            "artist_name": [str_or_none(x) or "" for x in train.artist_names],
        }
    )
    names = TrackNames.from_table(table, prepared.stage.catalog.uris)
    fitted = _fit_prepared(prepared, config, names, encoder)
    model.config = config.to_dict()
    model.report = fitted.report
    model.attach(fitted.stage, fitted.ranker, names)


LlaraPP.trainer = fit_trainset


def _load_previous(base_model: Path | str):
    from llarapp.models.base import Recommender

    previous = Recommender.load(base_model)
    if previous.name != "llara++":
        raise ValueError(f"base_model {base_model}: a {previous.name} model, expected llara++")
    return previous


def _previous_ranker(previous, stage: Stage) -> LlaraForCandidateScoring:
    """The ranker of ``previous`` with its behavior projection moved into ``stage``'s basis."""
    return rebase_ranker(previous.ranker, previous.stage, stage).train()


def _lora(model: LlaraForCandidateScoring, r: int):
    """Wrap ``model`` with LoRA adapters on the decoder's linear layers (peft)."""
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        lora_dropout=0.0,
        target_modules=targets,
        # trained whole: the heads the new ALS basis and features must reach, and the track
        # tower, which is where a listener's dislike of a track lands (adapters on the decoder
        # alone did not move a disliked track at all; measured in tests/test_feedback_training)
        modules_to_save=["feature_head", "item_embeddings", "cand_head"],
    )
    peft_model = get_peft_model(model, lora)
    # the gate between the decoder's interaction score and the feature blend: what a dislike of
    # one track in one context can move (the feature head alone ranks every context alike)
    peft_model.base_model.model.interaction.requires_grad_(True)
    peft_model.base_model.model.feature_context.requires_grad_(True)
    return peft_model


def train_ranker(
    fold_stages: list[Stage],
    stage: Stage,
    train_cases: list[RankCase],
    valid_cases: list[RankCase],
    config: LlaraTrainConfig,
    tracking_uri: str | None = None,
    init: LlaraForCandidateScoring | None = None,
    feature_weights: np.ndarray | None = None,
) -> tuple[LlaraForCandidateScoring, list[dict]]:
    """Curriculum training with early stopping on validation NDCG; tracked in MLflow.

    ``init`` (a previous ranker) is fine-tuned instead of a new one (LoRA when
    ``config.lora_r > 0``); a new one starts as the blend of the retrieval features per
    seed-count context, ``feature_weights`` (:func:`tune_context_weights` on ``train_cases``
    when None): its feature head is context 0's blend, its ``feature_context`` steps the rest.
    On a CUDA device training runs there in bfloat16 autocast.
    """
    torch.manual_seed(config.seed)
    rng = np.random.default_rng([config.seed, 5])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if init is not None:
        mode = "lora" if config.lora_r else "fine-tune"
        model, history = _fit_ranker(
            _lora(init, config.lora_r) if config.lora_r else init,
            (fold_stages, stage, train_cases, valid_cases),
            config,
            tracking_uri,
            device,
            rng,
            mode,
        )
        if config.lora_r:
            model = model.merge_and_unload()
        return model.eval(), history
    rconf = LlaraConfig(
        text_dim=stage.catalog.text.shape[1],
        behavior_dim=stage.behavior.shape[1],
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        intermediate_size=2 * config.hidden_size,
        max_position_embeddings=config.max_seeds + 2,
        n_features=len(FEATURES),
        interaction_init=0.0,  # start as the feature model; the gate opens as far as it helps
    )
    model = LlaraForCandidateScoring(rconf)
    if feature_weights is None:
        feature_weights = tune_context_weights(train_cases)
    weights = torch.from_numpy(10.0 * np.asarray(feature_weights, dtype=np.float32))
    with torch.no_grad():  # start from the best linear blends of the sources
        model.feature_head.weight.copy_(weights[0][None])
        model.feature_head.bias.zero_()
        steps = model.feature_context[rconf.hidden_size : rconf.hidden_size + len(CONTEXT_STEPS)]
        steps.copy_(weights[1:] - weights[:-1])  # the context code is a thermometer
    return _fit_ranker(
        model,
        (fold_stages, stage, train_cases, valid_cases),
        config,
        tracking_uri,
        device,
        rng,
        "new",
    )


def ships(best_epoch: int) -> str:
    """Which ranker a training run keeps: ``feature head`` when no epoch beat the starting
    point on validation (the transformer's interaction gate is then still at its start, 0 for a
    new ranker: what is served is the tuned linear blend of the retrieval features), else the
    epoch kept."""
    return "feature head" if best_epoch < 0 else f"transformer, epoch {best_epoch}"


def _fold_batches(
    folds: np.ndarray, batch_size: int, rng: np.random.Generator
) -> list[tuple[int, np.ndarray]]:
    """One epoch's batches in a random order: (fold, case rows), each batch from one fold
    (its cases' indices are that fold stage's), the cases shuffled within their fold."""
    batches = []
    for fold in np.unique(folds):
        rows = rng.permutation(np.flatnonzero(folds == fold))
        batches += [(int(fold), rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _fit_ranker(
    model,
    data: tuple[list[Stage], Stage, list[RankCase], list[RankCase]],
    config: LlaraTrainConfig,
    tracking_uri: str | None,
    device: torch.device,
    rng: np.random.Generator,
    mode: str,
):
    """The epoch loop of :func:`train_ranker`; ``mode``: new, fine-tune or lora (an MLflow tag)."""
    import mlflow

    fold_stages, stage, train_cases, valid_cases = data

    model.to(device)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    # the feature head learns fast; so do the interaction gate and the context reweighting when
    # fine-tuning (a LoRA run is short, and the gate is what lets the decoder act on feedback at
    # all). A new ranker's context reweighting moves at the decoder's pace: at the head's it
    # pulled validation NDCG 7 % below the tuned blends in one epoch on mpd-dev (1 % at this one)
    fast = (
        ("feature_head",) if mode == "new" else ("feature_head", "feature_context", "interaction")
    )
    head = [p for n, p in trainable if any(f in n for f in fast)]
    rest = [p for n, p in trainable if not any(f in n for f in fast)]
    # a fine-tune moves everything at finetune_lr: the feature head's 1e-2 from scratch is
    # too much for a trained model (a feedback run diverged with it)
    lr = config.lr if mode == "new" else config.finetune_lr
    head_lr = config.feature_lr if mode == "new" else config.finetune_lr
    groups = [{"params": rest, "lr": lr}, {"params": head, "lr": head_lr}]
    opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    train_batchers = [RankerBatcher(st, config) for st in fold_stages]
    valid_batcher = RankerBatcher(stage, config)
    folds = np.array([rc.fold for rc in train_cases])
    steps_per_epoch = sum(
        int(np.ceil(np.sum(folds == k) / config.batch_size)) for k in range(len(fold_stages))
    )
    steps_per_epoch = max(1, steps_per_epoch)
    total = max(1, config.epochs * steps_per_epoch)  # (no epoch: the starting point is kept)
    ramp = int(0.8 * total)  # the curriculum reaches all-hybrid tokens at 80 % of training
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr, head_lr], total_steps=total)
    serve_hybrid = config.curriculum != "text-only"
    history, stale, step = [], 0, 0
    configure_mlflow(tracking_uri)
    with mlflow.start_run(run_name=f"llara++ {config.curriculum} {mode}") as run:
        mlflow.set_tag("llarapp.mode", mode)
        mlflow.log_params(flatten(config.to_dict()))
        # the starting point competes too: training that never beats it is not kept. With
        # listeners' feedback, learning it is what the run is for and validation NDCG cannot
        # see it: the best of the trained epochs is kept (the gate against the champion
        # guards the rest), and every epoch runs
        start = valid_ndcg(model, valid_batcher, valid_cases, serve_hybrid, device)
        feedback = any(len(rc.negatives) for rc in train_cases)
        best, best_epoch = (-np.inf if feedback else start), -1
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append({"epoch": -1, "valid_ndcg": start})
        mlflow.log_metric("valid_ndcg", start, step=0)
        for epoch in range(config.epochs):
            model.train()
            losses = []
            for fold, rows in tqdm(
                _fold_batches(folds, config.batch_size, rng), desc=f"epoch {epoch}", leave=False
            ):
                hybrid = rng.random() < p_hybrid(config.curriculum, step, ramp)
                chunk = [train_cases[i] for i in rows]
                tensors = train_batchers[fold].batch(chunk, hybrid, rng)
                batch = {k: v.to(device) for k, v in tensors.items()}
                with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                    loss = model(**batch).loss
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                losses.append(loss.item())
                step += 1
            score = valid_ndcg(model, valid_batcher, valid_cases, serve_hybrid, device)
            row = {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)),
                "valid_ndcg": score,
                "p_hybrid": p_hybrid(config.curriculum, step, ramp),
            }
            history.append(row)
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
            log.info("epoch %d: loss %.4f valid ndcg %.4f", epoch, row["train_loss"], score)
            if score > best:
                best, best_epoch, stale = score, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= config.patience and not feedback:
                    break
        model.load_state_dict(best_state)
        model.to("cpu").eval()
        mlflow.log_metric("best_valid_ndcg", best)
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)  # a peft model saves its adapters
            mlflow.log_artifacts(tmp, artifact_path="ranker")
        mlflow.set_tag("llarapp.ships", ships(best_epoch))
        history.append(
            {"best_valid_ndcg": best, "best_epoch": best_epoch, "mlflow_run_id": run.info.run_id}
        )
    return model, history


def configure_mlflow(tracking_uri: str | None = None) -> str:
    """Point MLflow at ``tracking_uri``, ``$MLFLOW_TRACKING_URI``, or SQLite under ``runs/``."""
    import mlflow

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        Path("runs").mkdir(exist_ok=True)
        uri = f"sqlite:///{Path('runs/mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name("llarapp") is None:
        artifacts = None
        if uri.startswith("sqlite:"):
            artifacts = (
                (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
            )
        mlflow.create_experiment("llarapp", artifact_location=artifacts)
    mlflow.set_experiment("llarapp")
    return uri


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (MLflow params; tests compare nested figures)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
