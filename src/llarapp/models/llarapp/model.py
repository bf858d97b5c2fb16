"""``llara++``: retriever + curriculum-trained ranker behind the Recommender interface.

Folder layout (``save`` / ``Recommender.load``)::

    model.json            name, training config
    arrays.npz            track_uris (catalogue, warm first), popularity, text (float16),
                          behavior (float32), n_warm, item_playlists_* (CSR),
                          title_vectors (float16, training playlists' titles: title-kNN),
                          playlist_vectors (float16, those playlists' ALS vectors: title query),
                          artist_codes (int32, each track's artist, -1 unknown: artist source),
                          artist_names (each code's case-folded name: seeds sent by name)
    als/                  the ALS model over the warm tracks (fold-in)
    track_projector.safetensors
    ranker/               LlaraForCandidateScoring.save_pretrained
    train_report.json     what training measured
    track_names.parquet   track_uri, track_name, artist_name (responses; seeds sent by name)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from llarapp.data.dataset import Case
from llarapp.models.base import (
    ARRAYS_FILE,
    MODEL_FILE,
    Recommender,
    csr_arrays,
    csr_from_arrays,
    top_k,
)
from llarapp.models.baselines import ALS
from llarapp.models.llara import LlaraConfig, LlaraForCandidateScoring
from llarapp.models.projector import Projector
from llarapp.models.retriever import FEATURES, Retriever

RETRAIN = (
    "Train a new model with this version (`llarapp train` or the training pipeline); LoRA "
    "retraining cannot start from this one"
)


class LlaraPP(Recommender):
    """Two-stage LLaRA++ recommender (see :mod:`llarapp.training.llara` for training)."""

    name = "llara++"

    def __init__(self, config: dict[str, Any] | None = None, encoder=None) -> None:
        super().__init__()
        self.config = config or {}
        self.stage = None
        self.ranker: LlaraForCandidateScoring | None = None
        self.report: dict = {}
        self._encoder = encoder
        self._catalog_vectors: torch.Tensor | None = None  # (n_items, H), see catalog_vectors

    @property
    def encoder(self):
        if self._encoder is None:
            from llarapp.features.text import TextEncoder, default_cache_dir

            self._encoder = TextEncoder(default_cache_dir(), progress=False)
        return self._encoder

    @classmethod
    def from_parts(cls, stage, ranker, config, report: dict, encoder=None) -> LlaraPP:
        model = cls(config.to_dict(), encoder=encoder)
        model._attach(stage, ranker)
        model.report = report
        return model

    def _attach(self, stage, ranker) -> None:
        self.stage, self.ranker = stage, ranker.eval()
        self._set_catalogue(stage.catalog.uris, stage.popularity)
        self._text = torch.from_numpy(stage.catalog.text)
        self._behavior = torch.from_numpy(stage.behavior)
        self._catalog_vectors = None

    def config_dict(self) -> dict[str, Any]:
        return self.config

    def _fit(self, train) -> None:
        raise NotImplementedError(
            "llara++ needs the whole catalogue and validation cases: use "
            "llarapp.training.llara.train_llara (or `llarapp train`)"
        )

    def scores(self, case: Case) -> np.ndarray | None:
        raise NotImplementedError("llara++ ranks retrieved candidates: call recommend()")

    @property
    def hybrid(self) -> bool:
        return self.config.get("curriculum") != "text-only"

    def rank_case(self, case: Case):
        """Retrieve and build the ranker's RankCase for ``case`` (hidden unknown: empty)."""
        from llarapp.training.llara import make_rank_case
        from llarapp.training.stage import Query

        index = self.stage.catalog.index
        known = [index[t.track_uri] for t in case.seeds if t.track_uri in index]
        unknown = [t for t in case.seeds if t.track_uri not in index]
        dim = self.stage.catalog.text.shape[1]
        texts = ([case.title] if case.title and case.title.strip() else []) + [
            t.text for t in unknown
        ]
        vecs = self.encoder.encode(texts) if texts else np.zeros((0, dim), np.float32)
        has_title = bool(case.title and case.title.strip())
        q = Query(
            vecs[0] if has_title else None,
            np.array(list(dict.fromkeys(known)), dtype=np.int64),
            vecs[1:] if has_title else vecs,
            np.array([self.stage.artist_code(t.artist_name) for t in unknown], dtype=np.int64),
            self.stage.title_artists(case.title),
        )
        return make_rank_case(
            self.stage, q, np.zeros(0, np.int64), int(self.config.get("max_seeds", 50))
        )

    @property
    @torch.inference_mode()
    def catalog_vectors(self) -> torch.Tensor:
        """``(n_items, H)`` the ranker's candidate vector of every catalogue track, computed on
        first use (candidate vectors depend on the track alone, so serving gathers rows)."""
        if self._catalog_vectors is None:
            use = torch.full((len(self._text),), 1.0 if self.hybrid else 0.0)
            self._catalog_vectors = torch.cat(
                [
                    self.ranker.candidate_vectors(
                        self._text[i : i + 8192], self._behavior[i : i + 8192], use[i : i + 8192]
                    )
                    for i in range(0, len(self._text), 8192)
                ]
            )
        return self._catalog_vectors

    @torch.inference_mode()
    def candidate_scores(
        self,
        title_vec: np.ndarray | None,
        seed_idx: np.ndarray,
        candidates: np.ndarray,
        features: np.ndarray,
    ) -> np.ndarray:
        """(N,) ranker scores of ``candidates`` — the ranker's ``forward`` with the catalogue's
        candidate vectors precomputed (:attr:`catalog_vectors`).

        Args:
            title_vec: (text_dim,) title vector, or None.
            seed_idx: (S,) catalogue indices of the seeds the ranker reads.
            candidates: (N,) catalogue indices.
            features: (N, F) retriever features of the candidates.
        """
        S, use = len(seed_idx), 1.0 if self.hybrid else 0.0
        seeds = torch.from_numpy(np.asarray(seed_idx, dtype=np.int64))
        has_title = title_vec is not None
        title = (
            torch.from_numpy(np.asarray(title_vec, np.float32))[None]
            if has_title
            else torch.zeros(1, self._text.shape[1])
        )
        query = self.ranker.query_vectors(
            title,
            torch.tensor([float(has_title)]),
            self._text[seeds][None],
            self._behavior[seeds][None],
            torch.full((1, S), use),
            torch.ones(1, S),
        )
        cands = self.catalog_vectors[torch.from_numpy(np.asarray(candidates, np.int64))][None]
        feats = torch.from_numpy(np.asarray(features, np.float32))[None]  # (1, N, F)
        return self.ranker.score(query, cands, feats, torch.ones(1, len(candidates)))[0].numpy()

    def recommend(self, case: Case, k: int = 500) -> list[str]:
        if self.stage is None:
            raise RuntimeError(f"{self.name}: recommend() before fit() or load()")
        if k < 1:
            raise ValueError(f"k={k}: expected k >= 1")
        rc = self.rank_case(case)
        scores = self.candidate_scores(rc.title_vec, rc.seed_idx, rc.candidates, rc.features)
        order = rc.candidates[np.argsort(-scores, kind="stable")]
        ranked = order[:k].tolist()
        if len(ranked) < k:  # fill from popularity
            fill = self._tiebreak.copy()
            fill[rc.seed_idx] = -np.inf
            fill[order] = -np.inf
            ranked += top_k(fill, k - len(ranked)).tolist()
        return self.track_uris[np.asarray(ranked, dtype=np.int64)].tolist()

    def save(self, path: Path | str) -> Path:
        if self.stage is None:
            raise RuntimeError(f"{self.name}: save() before training")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        st = self.stage
        np.savez(
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
        )
        st.als.save(path / "als")
        save_file(st.track_projector.state_dict(), path / "track_projector.safetensors")
        self.ranker.save_pretrained(path / "ranker")
        meta = {"name": self.name, "config": self.config, "stage_report": st.report}
        (path / MODEL_FILE).write_text(json.dumps(meta, indent=2, default=float))
        return path

    @classmethod
    def _load(cls, path: Path, meta: dict[str, Any]) -> LlaraPP:
        from llarapp.training.stage import Catalog, Stage

        n_features = LlaraConfig.from_pretrained(path / "ranker").n_features
        if n_features != len(FEATURES):
            raise ValueError(
                f"{path}: its ranker reads {n_features} retrieval features; this "
                f"version computes {len(FEATURES)} ({', '.join(FEATURES)}). {RETRAIN}"
            )
        config = meta.get("config", {})
        with np.load(path / ARRAYS_FILE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if "playlist_vectors" not in arrays:
            raise ValueError(
                f"{path}: saved by an older version, which queried by a title projector; "
                f"this one needs the training playlists' vectors (playlist_vectors). {RETRAIN}"
            )
        text = arrays["text"].astype(np.float32)
        behavior = arrays["behavior"]
        n_warm = int(arrays["n_warm"])
        als = Recommender.load(path / "als")
        if not isinstance(als, ALS):
            raise ValueError(f"{path / 'als'}: expected an ALS model, found {als.name}")
        state = load_file(path / "track_projector.safetensors")
        hidden, text_dim = state["net.0.weight"].shape
        projector = Projector(text_dim, state["net.2.weight"].shape[0], hidden)
        projector.load_state_dict(state)
        popularity = arrays["popularity"].astype(np.float32)
        item_playlists = csr_from_arrays("item_playlists", arrays)
        retriever = Retriever(
            behavior,
            popularity == 0,
            popularity,
            item_playlists,
            float(config.get("knn_alpha", 0.2)),
            int(config.get("n_candidates", 800)),
            title_vectors=arrays["title_vectors"].astype(np.float32),
            playlist_vectors=arrays["playlist_vectors"].astype(np.float32),
            artist_codes=arrays.get("artist_codes"),
        )
        stage = Stage(
            catalog=Catalog(arrays["track_uris"].astype(str), text),
            n_warm=n_warm,
            als=als,
            behavior=behavior,
            popularity=popularity,
            track_projector=projector.eval(),
            retriever=retriever,
            report=meta.get("stage_report", {}),
            fold_in=config.get("curriculum") != "text-only",
            artist_names=arrays.get("artist_names"),
        )
        model = cls(config)
        model._attach(stage, LlaraForCandidateScoring.from_pretrained(path / "ranker"))
        return model
