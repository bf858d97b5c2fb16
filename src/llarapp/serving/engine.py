"""The three serving steps — encode, retrieve, rank — over one loaded LLaRA++ model.

:class:`ServingEngine` is an adapter: it checks payloads, turns them into the typed steps of
:mod:`llarapp.models.llarapp` (``LlaraPP.encode`` / ``retrieve`` / ``rank``, exactly what
``LlaraPP.recommend`` and so the benchmark and the gate run) and back, and picks the text
encoder and ranker backends (ONNX when exported, else PyTorch).

The KServe model servers (``kserve/llarapp_kserve``) are thin wrappers around these steps; the
library itself never imports kserve. Steps pass a *payload* (a dict) from one to the next, as
the InferenceGraph ``Sequence`` passes each step's response to the next step. In one process
the payload holds numpy arrays; over HTTP it is JSON (lists), and each step accepts either.

Payload keys, by the step that adds them::

    encode    request      the checked request (RecommendRequest.to_dict())
              title_vec    (384,) float32 MiniLM vector of the title, or None
              seed_idx     (S,) int64 catalogue indices of known seeds (by URI, else by name)
              seed_text    (m, 384) float32 MiniLM vectors of seeds the catalogue lacks
              seed_artists (m,) int64 their artists' codes (-1: an artist the model never saw)
              title_artists (a,) int64 codes of the artists the title names (Stage.title_artists)
              exclude_idx  (E,) int64 catalogue indices never recommended (seeds + same-name)
    retrieve  candidates   (N,) int64 catalogue indices, best first by the retriever
              features     (N, F) float32 retriever features (llarapp.models.retriever.FEATURES)
              rank_seed_idx (S',) int64 the known seeds the ranker reads (with the last
                           max_seeds - S' seed_text rows: at most max_seeds tokens)
    rank      -> the response: {"recommended_tracks": [{"track_uri", "track_name",
                 "artist_name", "score"}], "model_version": str}

Known tracks are never re-encoded (their vectors are the catalogue's); the title and the
unknown seeds go through one MiniLM forward together, behind an LRU cache. Tracks beyond the
retrieved candidates (``k`` > N) are filled by popularity, with scores below every ranked one.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llarapp.data.dataset import Case
from llarapp.models.llarapp import Candidates, Query, rank_seeds
from llarapp.models.retriever import FEATURES
from llarapp.serving.request import RecommendRequest, RequestError

log = logging.getLogger(__name__)

ONNX_MANIFEST = Path("onnx") / "manifest.json"


class TextCache:
    """MiniLM vectors for texts, an LRU in front of one batched forward for the misses."""

    def __init__(self, encode_fn, size: int = 100_000) -> None:
        self.encode_fn = encode_fn  # list[str] -> (n, dim) float32, L2-normalised
        self.size = size
        self._lru: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def encode(self, texts: Sequence[str], dim: int) -> np.ndarray:
        if not texts:
            return np.zeros((0, dim), np.float32)
        out: list[np.ndarray | None] = [None] * len(texts)
        with self._lock:
            for i, t in enumerate(texts):
                v = self._lru.get(t)
                if v is not None:
                    self._lru.move_to_end(t)
                    out[i] = v
        todo = sorted({t for t, v in zip(texts, out, strict=True) if v is None})
        if todo:
            vecs = np.asarray(self.encode_fn(todo), dtype=np.float32)
            fresh = dict(zip(todo, vecs, strict=True))
            with self._lock:
                self.misses += len(todo)
                for t, v in fresh.items():
                    self._lru[t] = v
                while len(self._lru) > self.size:
                    self._lru.popitem(last=False)
            out = [fresh[t] if v is None else v for t, v in zip(texts, out, strict=True)]
        with self._lock:
            self.hits += len(texts) - len(todo)
        return np.stack(out).astype(np.float32, copy=False)


def _minilm_encode_fn(model_dir: Path):
    """The exported ONNX text encoder when there is one, else the features' own encoder."""
    if (model_dir / ONNX_MANIFEST).is_file():
        try:
            from llarapp.export import load_text_encoder

            enc = load_text_encoder(model_dir)
            log.info("encoder: ONNX (%s)", model_dir / ONNX_MANIFEST)
            return enc.encode, "onnx"
        except (ImportError, KeyError, FileNotFoundError) as exc:
            log.warning(
                "encoder: no usable ONNX encoder in %s (%r); the features' encoder",
                ONNX_MANIFEST,
                exc,
            )
    from llarapp.text import TextEncoder

    enc = TextEncoder(cache_dir=None, progress=False)  # the vectors training embedded with
    enc.embed(["warm up"])  # load the model now, not on the first request
    return enc.embed, enc.backend


def _as_array(payload: dict, key: str, dtype, ndim: int, optional: bool = False):
    value = payload.get(key)
    if value is None:
        if optional:
            return None
        raise RequestError(f"payload: missing {key!r}", 400)
    try:
        arr = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"payload.{key}: expected numbers ({exc})", 400) from exc
    if arr.ndim != ndim and not (arr.size == 0 and ndim == 2):
        raise RequestError(f"payload.{key}: expected {ndim} dimension(s), got {arr.ndim}", 400)
    return arr


class ModelLoadError(ValueError):
    """A model folder with a corrupt or truncated file: refused at load."""


def damaged_file(folder: Path) -> str | None:
    """The first file of the model ``folder`` that does not read back whole, and why; None
    when every ``.npz`` (CRC-checked member by member), ``.safetensors``, ``.onnx`` and
    ``.json`` file parses.

    Run after a load failed, to name the culprit: a truncated file or a damaged header fails
    here; flipped bits inside safetensors / ONNX weights carry no checksum and load.
    """
    for path in sorted(Path(folder).rglob("*")):
        try:
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    for key in z.files:
                        z[key]
            elif path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(path, "np") as f:
                    for key in f.keys():  # noqa: SIM118 (a safetensors handle)
                        f.get_tensor(key)
            elif path.suffix == ".onnx":
                import onnx

                onnx.load(str(path))  # its external data too
            elif path.suffix == ".json":
                json.loads(path.read_bytes())
            else:
                continue
        except Exception as exc:
            why = " ".join(str(exc).split())[:200]
            return f"{path} is corrupt or truncated ({type(exc).__name__}: {why})"
    return None


class ServingEngine:
    """Encode / retrieve / rank over a loaded :class:`~llarapp.models.llarapp.LlaraPP`.

    Args:
        model: the loaded model.
        model_dir: its folder (names table, ONNX export).
        model_version: echoed in every response.
        steps: which steps this process serves (a split server loads only what it needs: the
            encoder skips the ranker backend, etc.); None for all three.
        ranker_backend: "auto" (ONNX when ``onnx/manifest.json`` exists, else PyTorch), "onnx"
            or "torch" (the catalogue's candidate vectors precomputed once at load).
        title_cache: LRU size of the text-vector cache.
    """

    STEPS = ("encode", "retrieve", "rank")

    def __init__(
        self,
        model,
        model_dir: Path | str,
        model_version: str,
        steps: Sequence[str] | None = None,
        ranker_backend: str = "auto",
        title_cache: int = 100_000,
    ) -> None:
        self.model = model
        self.model_dir = Path(model_dir)
        self.model_version = model_version
        self.steps = tuple(steps or self.STEPS)
        stage = model.stage
        self.stage = stage
        self.catalog_size = len(stage.catalog.uris)
        self.text_dim = stage.catalog.text.shape[1]
        self.uris = stage.catalog.uris
        self.index = stage.catalog.index  # URI -> catalogue index (the v2 servers read it)
        self.names = model.names
        self._uri_list = self.uris.astype(object)  # Python str per track, built once
        self.pop_order = model.pop_order
        self.text_backend = self.ranker_backend = None
        if "encode" in self.steps:
            fn, self.text_backend = _minilm_encode_fn(self.model_dir)
            self.texts = TextCache(fn, title_cache)
        if "rank" in self.steps:
            self._init_ranker(ranker_backend)

    @classmethod
    def load(
        cls,
        uri: str,
        steps: Sequence[str] | None = None,
        ranker_backend: str = "auto",
        cache_dir: Path | str | None = None,
    ) -> ServingEngine:
        """Resolve ``uri`` (:func:`llarapp.serving.model_uri.resolve_model_uri`) and load."""
        from llarapp.models.base import Recommender
        from llarapp.serving.model_uri import resolve_model_uri

        resolved = resolve_model_uri(uri, cache_dir)
        try:
            model = Recommender.load(resolved.path)
            if not hasattr(model, "stage"):
                raise ValueError(f"{uri}: a {model.name} model; serving needs a llara++ model")
            return cls(model, resolved.path, resolved.version, steps, ranker_backend)
        except Exception as exc:
            bad = damaged_file(resolved.path)
            if bad is None:  # the files parse: the error says what is wrong
                raise
            raise ModelLoadError(f"{uri}: not loaded, {bad}") from exc

    # ------------------------------------------------------------------ ranker backends
    def _init_ranker(self, backend: str) -> None:
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError(f"ranker_backend={backend!r}: expected auto, onnx or torch")
        self._session = self._serving = None
        manifest = self.model_dir / ONNX_MANIFEST
        if backend == "onnx" or (backend == "auto" and manifest.is_file()):
            if not manifest.is_file():
                raise FileNotFoundError(f"ranker_backend=onnx but {manifest} does not exist")
            from llarapp.export import load_ranker_session, load_serving_session

            self._serving = load_serving_session(self.model_dir)
            if self._serving is None:  # an export without the serving graph: the full one
                self._session, _ = load_ranker_session(self.model_dir)
                self._onnx_inputs = {i.name for i in self._session.get_inputs()}
            self.ranker_backend = "onnx"
            log.info("ranker: ONNX (%s graph)", "serving" if self._serving else "full")
        if self._session is None:  # the catalogue's candidate vectors: the export's, else now
            saved = None
            if self._serving is not None:
                from llarapp.export import load_cand_vectors

                saved = load_cand_vectors(self.model_dir, self.catalog_size)
            if saved is not None:
                self.model.use_catalog_vectors(saved)
            else:
                _ = self.model.catalog_vectors
        if self.ranker_backend is None:
            self.ranker_backend = "torch"
        log.info("ranker: %s", self.ranker_backend)

    def score(self, cands: Candidates) -> np.ndarray:
        """(N,) ranker scores of one case's candidates, by this engine's ranker backend."""
        if self._serving is not None:
            inputs = self.model.ranker_inputs([cands])
            return np.asarray(self._serving.run(None, inputs)[0][0], dtype=np.float32)
        if self._session is not None:
            inputs = self.model.ranker_inputs([cands], full=True)
            feeds = {k: v for k, v in inputs.items() if k in self._onnx_inputs}
            return np.asarray(self._session.run(None, feeds)[0][0], dtype=np.float32)
        return self.model.ranker_scores(cands)

    # ------------------------------------------------------------------ steps
    def encode(self, request: RecommendRequest) -> dict[str, Any]:
        """Request -> title / seed vectors and catalogue indices (step 1, ``LlaraPP.encode``)."""
        case = Case(title=request.name, seeds=request.tracks)
        q = self.model.encode(case, lambda texts: self.texts.encode(texts, self.text_dim))
        return {
            "request": request.to_dict(),
            "title_vec": q.title_vec,
            "seed_idx": q.seed_idx,
            "seed_text": q.extra_seed_text,
            "seed_artists": q.extra_seed_artists,
            "title_artists": q.title_artists,
            "exclude_idx": q.exclude_idx,
        }

    def retrieve(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Vectors -> top-N candidates with retriever features (step 2, ``LlaraPP.retrieve``)."""
        title_vec = self._title_vec(payload)
        seed_idx = self._indices(payload, "seed_idx")
        seed_text = self._seed_text(payload)
        # absent keys: a payload from an older encoder (seed artists unknown, none named)
        unknown = np.full(len(seed_text), -1, np.int64)
        artists = self._artist_codes(payload, "seed_artists", unknown, lowest=-1)
        if len(artists) != len(seed_text):
            raise RequestError(
                f"payload.seed_artists: {len(artists)} codes for {len(seed_text)} seed_text "
                "rows; expected one per row (-1 for an unknown artist)",
                400,
            )
        title_artists = self._artist_codes(payload, "title_artists", np.zeros(0, np.int64), 0)
        exclude = self._indices(payload, "exclude_idx", optional=True)
        query = Query(title_vec, seed_idx, seed_text, artists, title_artists, exclude)
        cands = self.model.retrieve(query)
        return {
            **payload,
            "candidates": cands.candidates,
            "features": cands.features,
            "rank_seed_idx": cands.rank_seed_idx,
        }

    def _title_vec(self, payload: dict[str, Any]) -> np.ndarray | None:
        """``payload["title_vec"]`` (None when absent), checked to be one text vector."""
        vec = _as_array(payload, "title_vec", np.float32, 1, optional=True)
        self._check_text_dim("title_vec", vec)
        return vec

    def _seed_text(self, payload: dict[str, Any]) -> np.ndarray:
        """``payload["seed_text"]``: the unknown seeds' text vectors, ``(0, dim)`` when absent."""
        vec = _as_array(payload, "seed_text", np.float32, 2, optional=True)
        if vec is None or vec.size == 0:
            return np.zeros((0, self.text_dim), np.float32)
        self._check_text_dim("seed_text", vec)
        return vec

    def _check_text_dim(self, name: str, vec: np.ndarray | None) -> None:
        if vec is not None and vec.shape[-1] != self.text_dim:
            raise RequestError(
                f"payload.{name}: vectors of size {vec.shape[-1]}; expected {self.text_dim}", 400
            )

    def _artist_codes(
        self, payload: dict[str, Any], key: str, default: np.ndarray, lowest: int
    ) -> np.ndarray:
        """The artist codes ``payload[key]`` (``default`` when absent), each checked to lie in
        ``[lowest, number of artists)``."""
        codes = _as_array(payload, key, np.int64, 1, optional=True)
        if codes is None:
            return default
        n_artists = 0 if self.stage.artist_names is None else len(self.stage.artist_names)
        if codes.size and (codes.min() < lowest or codes.max() >= n_artists):
            raise RequestError(
                f"payload.{key}: artist codes must be in [{lowest}, {n_artists})", 400
            )
        return codes

    def rank(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Candidates -> the response: the ranked top k, seeds never included (step 3,
        ``LlaraPP.rank``)."""
        request = payload.get("request") or {}
        k = request.get("k", 50)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise RequestError(f"payload.request.k={k!r}: expected an integer >= 1", 400)
        title_vec = self._title_vec(payload)
        seed_idx = self._indices(payload, "rank_seed_idx")
        cands = self._indices(payload, "candidates")
        feats = _as_array(payload, "features", np.float32, 2)
        if len(feats) != len(cands):
            raise RequestError(
                f"payload: {len(cands)} candidates but {len(feats)} feature rows", 400
            )
        n_features = len(FEATURES)  # what the model's ranker reads (checked at load)
        if feats.size and feats.shape[1] != n_features:
            raise RequestError(
                f"payload.features: {feats.shape[1]} columns; this model reads {n_features}", 400
            )
        exclude = self._indices(payload, "exclude_idx", optional=True)
        seeds_all = self._indices(payload, "seed_idx", optional=True)
        seed_text = self._seed_text(payload)
        # as retrieve() kept them (an older retriever sent up to max_seeds known ones)
        seed_idx, unknown = rank_seeds(seed_idx, seed_text, self.model.max_seeds)
        query = Query(title_vec, seeds_all, seed_text, exclude_idx=exclude)
        cands = Candidates(query, cands, feats, seed_idx, rank_seed_text=unknown)
        ranked = self.model.rank(cands, k, self.score)
        ranked, ranked_scores = ranked.indices, ranked.scores
        tracks = [
            {"track_uri": u, "track_name": n, "artist_name": a, "score": s}
            for u, n, a, s in zip(
                self._uri_list[ranked].tolist(),
                self.names.track_name[ranked].tolist(),
                self.names.artist_name[ranked].tolist(),
                np.round(ranked_scores.astype(np.float64), 6).tolist(),
                strict=True,
            )
        ]
        return {"recommended_tracks": tracks, "model_version": self.model_version}

    def run(self, request: RecommendRequest) -> dict[str, Any]:
        """All three steps in one call (tests, the numpy floor's reference)."""
        return self.rank(self.retrieve(self.encode(request)))

    def _indices(self, payload: dict, key: str, optional: bool = False) -> np.ndarray:
        arr = _as_array(payload, key, np.int64, 1, optional=optional)
        if arr is None:
            return np.zeros(0, np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.catalog_size):
            raise RequestError(
                f"payload.{key}: catalogue indices must be in [0, {self.catalog_size})", 400
            )
        return arr


def warmup_payload(engine: ServingEngine, step: str):
    """A real input for ``step`` (readiness self-test): known, unknown and title paths."""
    from llarapp.data.dataset import Track

    top = engine.pop_order[:2]
    if step == "encode":
        uri = str(engine.uris[top[0]])
        tracks = (Track("warm up", "llarapp", uri), Track("a track nobody knows", "nobody"))
        return RecommendRequest("warm up", tracks, k=10)
    text = engine.stage.catalog.text
    payload = {
        "request": {"name": "warm up", "tracks": [], "k": 10},
        "title_vec": text[top[0]].astype(np.float32),
        "seed_idx": top[:1].astype(np.int64),
        "seed_text": text[top[-1:]].astype(np.float32),
        "exclude_idx": top[:1].astype(np.int64),
    }
    if step == "retrieve":
        return payload
    if step == "rank":
        return engine.retrieve(payload)
    raise ValueError(f"step={step!r}: expected one of {ServingEngine.STEPS}")
