"""``llara++``: retriever + curriculum-trained ranker behind the Recommender interface, and the
one inference path: ``recommend(case, k)`` is ``rank(retrieve(encode(case)), k)``.

Folder layout (``save`` / ``Recommender.load``)::

    model.json            name, training config
    arrays.npz            track_uris (catalogue, warm first), popularity, text (float16),
                          behavior (float32), n_warm, item_playlists_* (CSR),
                          title_vectors (float16, training playlists' titles: title-kNN),
                          playlist_vectors (float16, those playlists' ALS vectors: title query),
                          artist_codes (int32, each track's artist, -1 unknown: artist source),
                          artist_names (each code's case-folded name: seeds sent by name),
                          n_trained (only once ``llarapp catalog add`` grew the catalogue: its
                          size at training; new releases follow, see catalog.py)
    als/                  the ALS model over the warm tracks (fold-in)
    track_projector.safetensors
    ranker/               LlaraForCandidateScoring.save_pretrained
    train_report.json     what training measured
    track_names.parquet   track_uri, track_name, artist_name (responses; seeds sent by name)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy_safetensors
from safetensors.torch import load_file, save_file

from llarapp.data.dataset import Case, TrainSet
from llarapp.data.names import TrackNames, write_track_names
from llarapp.models.ann import ANN_DIR, DEFAULT_THRESHOLD, AnnIndex, recall_of
from llarapp.models.base import (
    ARRAYS_FILE,
    MODEL_FILE,
    Recommender,
    csr_arrays,
    csr_from_arrays,
)
from llarapp.models.baselines import ALS
from llarapp.models.llarapp.stage import Catalog, Query, Stage
from llarapp.models.llarapp.steps import Candidates, Embed, Ranked, encode, ranker_inputs, retrieve
from llarapp.models.npz import load_npz, save_npz
from llarapp.models.projector import Projector
from llarapp.models.retriever import FEATURES, Retriever

if TYPE_CHECKING:  # loaded on first use: serving from the export never imports transformers
    from llarapp.models.llara import LlaraForCandidateScoring

log = logging.getLogger(__name__)

RETRAIN = (
    "Train a new model with this version (`llarapp train` or the training pipeline); LoRA "
    "retraining cannot start from this one"
)

#: one case's candidates -> their (N,) ranker scores (a ranker backend)
Scorer = Callable[[Candidates], np.ndarray]


class LlaraPP(Recommender):
    """Two-stage LLaRA++ recommender: encode -> retrieve -> rank.

    Fitting lives in :mod:`llarapp.training.llara` (``models`` never imports ``training``):
    importing it sets :attr:`trainer`, which :meth:`fit` calls.
    """

    name = "llara++"
    #: ``(model, train) -> None``: fits ``model`` on ``train`` (set by llarapp.training.llara)
    trainer: ClassVar[Callable[[LlaraPP, TrainSet], None] | None] = None

    def __init__(self, config: dict[str, Any] | None = None, encoder=None) -> None:
        super().__init__()
        self.config = dict(config or {})
        self.stage: Stage | None = None
        self._ranker: LlaraForCandidateScoring | None = None
        self._ranker_dir: Path | None = None  # a loaded model's ranker/, read on first use
        self.names: TrackNames | None = None
        self.report: dict = {}
        self._encoder = encoder
        self._catalog_vectors: np.ndarray | None = None  # (n_items, H), see catalog_vectors

    @property
    def encoder(self):
        """The features' MiniLM encoder (the vectors training embedded with), on first use."""
        if self._encoder is None:
            from llarapp.text import TextEncoder, default_cache_dir

            self._encoder = TextEncoder(default_cache_dir(), progress=False)
        return self._encoder

    @classmethod
    def from_parts(
        cls, stage: Stage, ranker, config, report: dict, names: TrackNames, encoder=None
    ) -> LlaraPP:
        model = cls(config.to_dict(), encoder=encoder)
        model.attach(stage, ranker, names)
        model.report = report
        return model

    @property
    def ranker(self) -> LlaraForCandidateScoring:
        """The ranker (PyTorch). A loaded model reads it from its folder on first use: a server
        ranking with the ONNX export and its saved candidate vectors never does, so it neither
        imports transformers nor holds the weights."""
        if self._ranker is None:
            from llarapp.models.llara import LlaraForCandidateScoring

            self._ranker = LlaraForCandidateScoring.from_pretrained(self._ranker_dir).eval()
        return self._ranker

    def attach(
        self, stage: Stage, ranker: LlaraForCandidateScoring | Path, names: TrackNames
    ) -> None:
        """Make this the model of ``stage``, ``ranker`` (or the folder to read it from on first
        use) and the catalogue's ``names``."""
        self.stage, self.names = stage, names
        if isinstance(ranker, Path):
            self._ranker, self._ranker_dir = None, ranker
        else:
            self._ranker = ranker.eval()
        self._set_catalogue(stage.catalog.uris, stage.popularity)
        self.pop_order = np.argsort(-self._tiebreak, kind="stable")
        self._text = stage.catalog.text  # float16 when loaded (mapped): rows widen when read
        self._behavior = np.ascontiguousarray(stage.behavior, dtype=np.float32)
        self._catalog_vectors = None

    def config_dict(self) -> dict[str, Any]:
        return self.config

    def _fit(self, train: TrainSet) -> None:
        if LlaraPP.trainer is None:
            raise RuntimeError(
                "llara++: fit() needs the training code; import llarapp.training.llara first "
                "(or train with `llarapp train`)"
            )
        LlaraPP.trainer(self, train)

    def scores(self, case: Case) -> np.ndarray | None:
        raise NotImplementedError("llara++ ranks retrieved candidates: call recommend()")

    @property
    def hybrid(self) -> bool:
        return self.config.get("curriculum") != "text-only"

    @property
    def ann_threshold(self) -> int:
        """Catalogues and title sets with more rows are searched by an approximate index."""
        return int(self.config.get("ann_threshold", DEFAULT_THRESHOLD))

    @property
    def max_seeds(self) -> int:
        return int(self.config.get("max_seeds", 50))

    # ------------------------------------------------------------------ the three steps
    def encode(self, case: Case, embed: Embed | None = None) -> Query:
        """Step 1: a case -> its :class:`Query` (:func:`encode`; texts embedded by ``embed``,
        default :attr:`encoder`)."""
        self._check_ready("encode")
        return encode(self.stage, case, embed or self.encoder.encode, self.names, self._tiebreak)

    def retrieve(self, query: Query) -> Candidates:
        """Step 2: the query -> the top-N candidates with their retriever features."""
        self._check_ready("retrieve")
        return retrieve(self.stage, query, self.max_seeds)

    def rank(self, cands: Candidates, k: int, score: Scorer | None = None) -> Ranked:
        """Step 3: the candidates -> the top ``k``, seeds and ``query.exclude_idx`` never in
        it; beyond the candidates, popularity fills (scores below every ranked one).

        Args:
            cands: the retrieved candidates.
            k: how many.
            score: the ranker backend; default :meth:`ranker_scores` (PyTorch).
        """
        self._check_ready("rank")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k={k!r}: expected an integer k >= 1")
        exclude = np.union1d(cands.query.exclude_idx, cands.query.seed_idx)
        ranked = np.zeros(0, np.int64)
        ranked_scores = np.zeros(0, np.float32)
        if len(cands.candidates):
            scores = (score or self.ranker_scores)(cands)
            scores = np.asarray(scores, dtype=np.float32)[: len(cands.candidates)]
            order = np.argsort(-scores, kind="stable")
            ranked, ranked_scores = cands.candidates[order], scores[order]
            keep = ~np.isin(ranked, exclude)
            ranked, ranked_scores = ranked[keep][:k], ranked_scores[keep][:k]
        if len(ranked) < k:  # popularity fill, below every ranked score
            need = k - len(ranked)
            head = self.pop_order[: need + len(exclude) + len(cands.candidates)]
            head = head[~np.isin(head, exclude) & ~np.isin(head, ranked)][:need]
            floor = float(ranked_scores.min()) if len(ranked_scores) else 0.0
            fill = floor - 1.0 - np.arange(len(head), dtype=np.float32) * 1e-3
            ranked = np.concatenate([ranked, head])
            ranked_scores = np.concatenate([ranked_scores, fill.astype(np.float32)])
        return Ranked(ranked.astype(np.int64), ranked_scores.astype(np.float32))

    def candidates(self, case: Case, embed: Embed | None = None) -> Candidates:
        """``retrieve(encode(case))``."""
        return self.retrieve(self.encode(case, embed))

    def recommend(self, case: Case, k: int = 500) -> list[str]:
        """``rank(retrieve(encode(case)), k)`` as track URIs: what ``llarapp serve`` answers."""
        self._check_ready("recommend")  # rank() checks k
        ranked = self.rank(self.candidates(case), k)
        return self.track_uris[ranked.indices].tolist()

    def _check_ready(self, step: str) -> None:
        if self.stage is None:
            raise RuntimeError(f"{self.name}: {step}() before fit() or load()")

    # ------------------------------------------------------------------ the ranker
    @property
    @torch.inference_mode()
    def catalog_vectors(self) -> np.ndarray:
        """``(n_items, H)`` the ranker's candidate vector of every catalogue track: the ones
        given to :meth:`use_catalog_vectors`, else computed on first use (candidate vectors
        depend on the track alone, so serving gathers rows)."""
        if self._catalog_vectors is None:
            n, f32 = len(self._text), np.float32
            use = torch.full((8192,), 1.0 if self.hybrid else 0.0)
            self._catalog_vectors = torch.cat(
                [
                    self.ranker.candidate_vectors(
                        torch.from_numpy(np.asarray(self._text[i : i + 8192], f32)),
                        torch.from_numpy(np.asarray(self._behavior[i : i + 8192], f32)),
                        use[: min(8192, n - i)],
                    )
                    for i in range(0, n, 8192)
                ]
            ).numpy()
        return self._catalog_vectors

    def use_catalog_vectors(self, vectors: np.ndarray) -> None:
        """Take :attr:`catalog_vectors` as computed before (the export's, memory-mapped)."""
        if vectors.shape[0] != len(self._text):
            raise ValueError(
                f"catalog vectors: {vectors.shape[0]} rows for {len(self._text)} tracks"
            )
        self._catalog_vectors = vectors

    def ranker_inputs(
        self, cands: Sequence[Candidates], full: bool = False
    ) -> dict[str, np.ndarray]:
        """The ranker's inputs for a batch of cases (:func:`ranker_inputs`): the serving
        graph's (the catalogue's precomputed candidate vectors, :attr:`catalog_vectors`), or
        with ``full`` ``forward``'s (the candidates' text and behavior)."""
        return ranker_inputs(
            self._text,
            self._behavior,
            [c.query.title_vec for c in cands],
            [c.rank_seed_idx for c in cands],
            [c.candidates for c in cands],
            [c.features for c in cands],
            self.hybrid,
            cand_vectors=None if full else self.catalog_vectors,
            seed_texts=[c.rank_seed_text for c in cands],
        )

    @torch.inference_mode()
    def ranker_scores(self, cands: Candidates) -> np.ndarray:
        """(N,) PyTorch ranker scores of ``cands``: the serving graph's computation (the
        query tower, then ``score`` against the precomputed :attr:`catalog_vectors`)."""
        t = {k: torch.from_numpy(v) for k, v in self.ranker_inputs([cands]).items()}
        query = self.ranker.query_vectors(
            t["title_vec"],
            t["title_mask"],
            t["seed_text"],
            t["seed_behavior"],
            t["seed_use_behavior"],
            t["seed_mask"],
        )
        scores = self.ranker.score(query, t["cand_vectors"], t["cand_features"], t["cand_mask"])
        return scores[0].numpy()

    def save(self, path: Path | str) -> Path:
        if self.stage is None:
            raise RuntimeError(f"{self.name}: save() before training")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        st = self.stage
        save_npz(  # renamed over the old file, which this model may be mapping
            path / ARRAYS_FILE,
            track_uris=self.track_uris,
            popularity=self.popularity,
            text=st.catalog.text.astype(np.float16),
            behavior=st.behavior,
            n_warm=np.array(st.n_warm),
            title_vectors=st.retriever.title_vectors.astype(np.float16),
            playlist_vectors=st.retriever.playlist_vectors.astype(np.float16),
            **(
                {}
                if st.retriever.artist_codes is None
                else {
                    "artist_codes": st.retriever.artist_codes.astype(np.int32),
                    "artist_names": st.artist_names,
                }
            ),
            **csr_arrays("item_playlists", st.retriever.item_playlists),
            **(  # new releases added since training keep their artist vote
                {}
                if st.retriever.n_trained is None
                else {"n_trained": np.array(st.retriever.n_trained)}
            ),
        )
        st.als.save(path / "als")
        save_indexes(path, st, self.ann_threshold)
        save_file(st.track_projector.state_dict(), path / "track_projector.safetensors")
        self.ranker.save_pretrained(path / "ranker")
        if self.names is not None:  # names in responses, seeds sent by name
            write_track_names(path, self.names.to_table())
        meta = {"name": self.name, "config": self.config, "stage_report": st.report}
        (path / MODEL_FILE).write_text(json.dumps(meta, indent=2, default=float))
        return path

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> LlaraPP:
        n_features = json.loads((path / "ranker" / "config.json").read_text())["n_features"]
        if n_features != len(FEATURES):
            raise ValueError(
                f"{path}: its ranker reads {n_features} retrieval features; this "
                f"version computes {len(FEATURES)} ({', '.join(FEATURES)}). {RETRAIN}"
            )
        config = meta.get("config", {})
        arrays = load_npz(path / ARRAYS_FILE)
        if "playlist_vectors" not in arrays:
            raise ValueError(
                f"{path}: saved by an older version, which queried by a title projector; "
                f"this one needs the training playlists' vectors (playlist_vectors). {RETRAIN}"
            )
        text = arrays["text"]  # float16, mapped
        behavior = np.asarray(arrays["behavior"], np.float32)
        threshold = int(config.get("ann_threshold", DEFAULT_THRESHOLD))
        titles = arrays["title_vectors"]  # exact below the threshold: float32 for the product
        titles = titles if len(titles) > threshold else titles.astype(np.float32)
        n_warm = int(arrays["n_warm"])
        als = Recommender.load(path / "als")
        if not isinstance(als, ALS):
            raise ValueError(f"{path / 'als'}: expected an ALS model, found {als.name}")
        projector = load_projector(path)
        popularity = arrays["popularity"].astype(np.float32)
        item_playlists = csr_from_arrays("item_playlists", arrays)
        retriever = Retriever(
            behavior,
            popularity == 0,
            popularity,
            item_playlists,
            float(config.get("knn_alpha", 0.2)),
            int(config.get("n_candidates", 800)),
            title_vectors=titles,
            playlist_vectors=arrays["playlist_vectors"],  # float16, mapped: rows are read
            artist_codes=arrays.get("artist_codes"),
            n_trained=int(arrays["n_trained"]) if "n_trained" in arrays else None,
        )
        stage = Stage(
            catalog=Catalog(arrays["track_uris"].astype(str), text),
            n_warm=n_warm,
            als=als,
            behavior=behavior,
            popularity=popularity,
            track_projector=projector,
            retriever=retriever,
            report=meta.get("stage_report", {}),
            fold_in=config.get("curriculum") != "text-only",
            artist_names=arrays.get("artist_names"),
        )
        load_indexes(path, stage, threshold)
        model = cls(config)
        ranker_files = sorted((path / "ranker").glob("*.safetensors"))
        if not ranker_files:
            raise FileNotFoundError(f"{path / 'ranker'}: no ranker weights (*.safetensors)")
        for file in ranker_files:  # read on first use, but a damaged file is refused now
            load_numpy_safetensors(file)
        model.attach(stage, path / "ranker", TrackNames.load(path, stage.catalog.uris))
        return model


#: the retriever's indexed arrays: index name -> (attribute of the index, of its vectors)
INDEXES = {"behavior": ("behavior_index", "behavior"), "titles": ("title_index", "title_vectors")}
#: what the indexes keep of the exact answer: the share of the exact fused candidates
TARGET_RECALL = 0.99


def build_indexes(stage: Stage, threshold: int) -> list[str]:
    """Give the stage's retriever an index of each of its arrays of more than ``threshold``
    rows that has none (or one of another size), then tune them (:func:`tune_indexes`) if any
    was built; returns the names built."""
    retriever, built = stage.retriever, []
    for name, (attr, vectors_attr) in INDEXES.items():
        vectors = getattr(retriever, vectors_attr)
        index = getattr(retriever, attr)
        if vectors is None or len(vectors) <= threshold:
            continue
        if index is None or index.rows != len(vectors):
            setattr(retriever, attr, AnnIndex.build(vectors))
            built.append(name)
    if built:
        tune_indexes(stage)
    return built


def tune_indexes(stage: Stage, probes: int = 64, seed: int = 0) -> float:
    """Set every index's ``nprobe`` to the smallest power of two (capped at its lists) whose
    fused candidates hold :data:`TARGET_RECALL` of the exact ones, on ``probes`` requests
    made of training playlists (a title and up to 10 of its tracks): what the answer needs,
    rather than the whole of each source's top N, whose tail the fusion barely reads. Returns
    the recall reached (also kept in each index's ``meta``)."""
    retriever = stage.retriever
    indexes = [i for i in (retriever.behavior_index, retriever.title_index) if i is not None]
    if not indexes:
        return 1.0
    rng = np.random.default_rng(seed)
    playlist_items = retriever.item_playlists.T.tocsr()  # playlist -> warm tracks
    queries = []
    for p in rng.choice(playlist_items.shape[0], min(probes, playlist_items.shape[0]), False):
        tracks = playlist_items.indices[playlist_items.indptr[p] : playlist_items.indptr[p + 1]]
        seeds = rng.choice(tracks, min(10, len(tracks)), replace=False)
        title = None if retriever.title_vectors is None else retriever.title_vectors[p]
        queries.append(
            Query(
                title_vec=None if title is None else np.asarray(title, np.float32),
                seed_idx=np.sort(seeds).astype(np.int64),
                extra_seed_text=np.zeros((0, stage.catalog.text.shape[1]), np.float32),
            )
        )
    for index in indexes:  # every list read: the exact answer
        index.nprobe = index.nlist
    exact = [stage.retrieve(q)[0].candidates for q in queries]
    nprobe = 1
    while True:
        for index in indexes:
            index.nprobe = nprobe
        found = [stage.retrieve(q)[0].candidates for q in queries]
        recall = float(np.mean([recall_of(f, e) for f, e in zip(found, exact, strict=True)]))
        if recall >= TARGET_RECALL or all(i.nprobe == i.nlist for i in indexes):
            break
        nprobe *= 2
    for index in indexes:
        index.meta |= {"recall": round(recall, 4), "tuned_on": f"{len(queries)} playlists"}
    log.info("ann indexes: nprobe %d, %.4f of the exact fused candidates", nprobe, recall)
    return recall


def save_indexes(path: Path, stage: Stage, threshold: int) -> None:
    """Write ``path/ann/`` the stage's indexes of more than ``threshold`` rows (built and
    tuned now where the retriever has none)."""
    build_indexes(stage, threshold)
    for name, (attr, _) in INDEXES.items():
        index = getattr(stage.retriever, attr)
        if index is not None:
            index.save(path / ANN_DIR, name)


def load_indexes(path: Path, stage: Stage, threshold: int) -> None:
    """Give the stage's retriever its indexes of more than ``threshold`` rows: mapped from
    ``path/ann/``, or built now (logged) for a model saved without them or whose catalogue
    grew since (``llarapp catalog add``)."""
    retriever = stage.retriever
    for name, (attr, vectors_attr) in INDEXES.items():
        vectors = getattr(retriever, vectors_attr)
        if vectors is not None and len(vectors) > threshold:
            setattr(retriever, attr, AnnIndex.load(path / ANN_DIR, name, vectors.shape))
    built = build_indexes(stage, threshold)
    if built:
        log.warning("%s: no saved index for %s; built one now", path, ", ".join(built))


def load_projector(path: Path | str) -> Projector:
    """The track projector of the model saved in ``path`` (``track_projector.safetensors``),
    in eval mode."""
    state = load_file(Path(path) / "track_projector.safetensors")
    hidden, text_dim = state["net.0.weight"].shape
    projector = Projector(text_dim, state["net.2.weight"].shape[0], hidden)
    projector.load_state_dict(state)
    return projector.eval()
