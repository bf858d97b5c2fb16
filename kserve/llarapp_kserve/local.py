"""One process, three models: the local server behind ``llarapp serve``.

Hosts the encoder, retriever and ranker models (one shared engine: the model is loaded once)
in one ``kserve.ModelServer`` bound to 127.0.0.1, with the stock KServe routes
(``/v1/models/NAME:predict``, ``/v2/models/NAME/infer``, ``/v2/health/ready``, ``/metrics``)
plus:

- ``POST /v1/recommend`` — a person's request; walks the champion's ``Sequence`` of the
  InferenceGraph manifest (``manifests/base/inference-graph.yaml``), step by step, each step
  served by the model the manifest names; answers ``{"recommended_tracks", "model_version",
  "request_id"}``;
- ``POST /v1/feedback`` — ``{"request_id" | "playlist_id", "track_uri", "liked"}``; stored
  durably (SQLite WAL, synchronous=FULL) before the 200;
- ``GET /v1/canary``, ``POST /v1/canary {"percent": P}`` — with a challenger (``--challenger``),
  the share of ``/v1/recommend`` it answers (:mod:`llarapp.serving.canary`: sticky per
  ``playlist_id``, kept in a state file every worker re-reads), read or changed at run time:
  100 promotes, 0 rolls back. The challenger's steps run in this process beside the
  champion's; only the champion's are registered as kserve models (``/v1/models``, ``/v2``);
- ``GET /`` — the page to try it (``llarapp_kserve/web/index.html``: a title, seeds picked from
  the catalogue, the recommendations with like / dislike buttons posting ``/v1/feedback``);
- ``GET /v1/search?q=WORDS&limit=N`` — catalogue tracks for the page's seed picker
  (:mod:`llarapp.serving.search`; ``limit`` 1..50, default 10);
- ``GET /openapi.json`` — every route above and the stock ones, with their request and
  response shapes (:mod:`llarapp_kserve.openapi`; the model repository and model versions
  are not served: 404 saying why).

Every answer carries the ``model_version`` that made it; the request log, the feedback rows and
``llarapp_recommend_*`` / ``llarapp_feedback_total`` on ``/metrics`` are labelled with it.

Bad input answers 400 (not UTF-8 JSON), 413 (body over the limit) or 422 (wrong shape), with
``{"error": "..."}``; the server keeps serving. SIGTERM / SIGINT drain in-flight requests
(uvicorn graceful shutdown), then flush the request log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.model_server import app
from kserve.protocol.rest.server import RESTServer
from starlette.responses import HTMLResponse, Response

from llarapp.serving.canary import CanarySplit, CanaryWindow, check_percent
from llarapp.serving.engine import ServingEngine
from llarapp.serving.graph import read_sequence
from llarapp.serving.request import Limits, RequestError, decode_json, parse_feedback
from llarapp.serving.search import CatalogSearch, search_response
from llarapp.serving.store import EventStore
from llarapp_kserve.common import (
    FEEDBACK,
    RECOMMEND,
    RECOMMEND_SECONDS,
    REQUEST_SECONDS,
    REQUESTS,
    BodyLimit,
    PayloadError,
    StepModel,
    access_log,
    executor,
    log_json,
)
from llarapp_kserve.encoder.model import EncoderModel
from llarapp_kserve.openapi import UnservedRoutes, prune_unserved, route_docs
from llarapp_kserve.ranker.model import RankerModel
from llarapp_kserve.retriever.model import RetrieverModel

log = logging.getLogger("llarapp.serving")

#: the page served at ``/`` (package data: an installed wheel serves it too)
PAGE = Path(__file__).resolve().parent / "web" / "index.html"

#: graph step name -> the model class serving it
STEP_MODELS = {"encode": EncoderModel, "retrieve": RetrieverModel, "rank": RankerModel}


def default_graph_path() -> Path:
    """``$LLARAPP_GRAPH``, else the graph shipped in this package (package data; in a source
    checkout a link to ``manifests/base/inference-graph.yaml``, the file kustomize deploys)."""
    env = os.environ.get("LLARAPP_GRAPH")
    return Path(env) if env else Path(__file__).resolve().with_name("inference-graph.yaml")


def json_response(content: Any, status_code: int = 200) -> Response:
    """JSON via orjson (numpy arrays included)."""
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status_code, media_type="application/json")


class LoopbackModelServer(ModelServer):
    """A ``kserve.ModelServer`` whose REST server binds ``host`` (stock: 0.0.0.0), no gRPC."""

    def __init__(self, host: str, on_stopped=None, reuse_port=False, **kwargs: Any) -> None:
        super().__init__(enable_grpc=False, **kwargs)
        self.host = host
        self.on_stopped = on_stopped
        self.reuse_port = reuse_port  # one of a --workers supervisor's processes

    def start(self, models) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            access_log_format=self.access_log_format,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        self._rest_server.config.host = self.host
        # llarapp.serving.access logs each request once; uvicorn's and kserve's per-request
        # lines (three more) go: uvicorn skips its access log when the logger has no handler
        uvicorn_access = logging.getLogger("uvicorn.access")
        uvicorn_access.handlers, uvicorn_access.propagate = [], False
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
        if self.reuse_port:
            self.servers.append(self._serve_shared(self._shared_socket()))
        else:
            self.servers.append(self._rest_server.start())
        self.setup_event_loop()
        self.register_signal_handler()
        try:
            asyncio.run(self._serve())
        finally:
            if self.on_stopped is not None:
                self.on_stopped()

    def _shared_socket(self) -> socket.socket:
        """The port, bound with SO_REUSEPORT: the kernel spreads connections over the workers."""
        # proto given, so asyncio sets TCP_NODELAY on accepted connections (it checks it)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((self.host, self.http_port))
        return sock

    async def _serve_shared(self, sock: socket.socket) -> None:
        # RESTServer.start() without binding: uvicorn serves the given socket
        self._rest_server.create_application()
        await self._rest_server._server.serve(sockets=[sock])

    def stop(self, sig: int) -> None:
        # uvicorn drains in-flight requests on SIGTERM / SIGINT itself and re-raises the
        # signal once done; then there is nothing left to stop but the models
        for name in list(self.registered_models.get_models()):
            self.registered_models.unload(name)


class LocalServer:
    """The three models + the graph and feedback routes (and a challenger's three models).

    Args:
        model_uri: a model folder, s3:// prefix or models:/ URI (the champion).
        events: SQLite file for feedback and the request log.
        sample_rate: share of requests logged.
        graph: the InferenceGraph manifest whose root Sequence ``/v1/recommend`` walks.
        challenger: a second model URI to split traffic with; None serves one model.
        canary_percent: the challenger's starting share of traffic, 0..100.
        canary_state: the split's state file (default ``EVENTS.canary.json``).
    """

    def __init__(
        self,
        model_uri: str,
        events: Path | str = "runs/serving/events.db",
        sample_rate: float = 0.1,
        graph: Path | str | None = None,
        limits: Limits | None = None,
        ranker_backend: str = "auto",
        challenger: str | None = None,
        canary_percent: float = 10.0,
        canary_state: Path | str | None = None,
    ) -> None:
        self.limits = limits or Limits()
        self.steps = read_sequence(graph or default_graph_path())
        unknown = [s.name for s in self.steps if s.name not in STEP_MODELS]
        if unknown:
            raise ValueError(f"graph steps {unknown}: expected names in {sorted(STEP_MODELS)}")
        self.core, self.models = self._load(model_uri, ranker_backend, "")
        self.ranker_backend = ranker_backend
        self.challenger: tuple[ServingEngine, list[StepModel]] | None = None
        self._challenger_uri: str | None = None  # loaded, or being loaded
        self._lock = threading.Lock()  # the challenger fields and the state file change together
        if challenger is not None:
            self.challenger, self._challenger_uri = self._load_challenger(challenger), challenger
        self.split = CanarySplit(
            canary_state or f"{events}.canary.json",
            canary_percent if challenger is not None else 0.0,
            challenger,
        )
        self.window = CanaryWindow()  # what `llarapp rollout` compares (GET /v1/canary)
        self.store = EventStore(events, sample_rate)
        self.search_index = CatalogSearch.from_engine(self.core)

    def _load_challenger(self, uri: str) -> tuple[ServingEngine, list[StepModel]]:
        """``uri`` loaded as the challenger (a different model than the champion, or
        ValueError)."""
        loaded = self._load(uri, self.ranker_backend, "-challenger")
        version = loaded[0].model_version
        if version == self.core.model_version:
            raise ValueError(
                f"challenger {uri}: model_version {version} is the champion's; expected a "
                "different model"
            )
        return loaded

    def _follow(self, uri: str | None) -> None:
        """Another worker (or a controller) named a new challenger in the state file: load it
        in the background; requests go to the champion until it is ready."""
        self._challenger_uri = uri
        if uri is None:
            self.challenger = None
            return

        def load() -> None:
            try:
                loaded = self._load(uri, self.ranker_backend, "-challenger")
            except Exception:
                log.exception("challenger %s could not be loaded; the champion answers", uri)
                return
            if self._challenger_uri == uri:
                self.challenger = loaded

        self.challenger = None
        threading.Thread(target=load, name="load-challenger", daemon=True).start()

    def _load(
        self, uri: str, ranker_backend: str, suffix: str
    ) -> tuple[ServingEngine, list[StepModel]]:
        """One model's engine and its step models (named SERVICE + ``suffix``), loaded."""
        core = ServingEngine.load(uri, ranker_backend=ranker_backend)
        models = [STEP_MODELS[s.name](s.service + suffix, core=core) for s in self.steps]
        for model in models:
            model.load()
        return core, models

    def install(self) -> None:
        """Add the routes and the body limit to the kserve FastAPI app (before start)."""
        docs = route_docs(self.limits)  # their part of GET /openapi.json
        for method, path, handler in (
            ("POST", "/v1/recommend", self.recommend),
            ("POST", "/v1/feedback", self.feedback),
            ("GET", "/v1/canary", self.canary),
            ("POST", "/v1/canary", self.canary),
            ("GET", "/v1/search", self.search),
        ):
            extra = docs[f"{method} {path}"]
            app.add_api_route(path, handler, methods=[method], openapi_extra=extra)
        # before kserve's own "/" (a liveness answer the manifests do not probe): the page
        app.add_api_route("/", self.page, methods=["GET"], include_in_schema=False)
        app.add_middleware(UnservedRoutes)
        generate = app.openapi  # FastAPI's, cached in app.openapi_schema after the first call
        app.openapi = lambda: prune_unserved(generate())
        app.add_middleware(
            BodyLimit,
            small=self.limits.max_body_bytes,
            large_prefixes=tuple(
                f"/{v}/models/{m.name}" for m in self.models[1:] for v in ("v1", "v2")
            ),
        )

    def serve(
        self, host: str = "127.0.0.1", port: int = 8080, grace_period: int = 30, worker=False
    ) -> None:
        """Serve until SIGTERM / SIGINT.

        Args:
            worker: this process was forked by a ``--workers`` supervisor after it loaded the
                models (:func:`llarapp_kserve.__main__.supervise`): it shares the port and
                opens its own event store (the supervisor closed its one before forking: a
                SQLite connection and the request-log thread do not survive a fork).
        """
        if worker:
            self.store = EventStore(self.store.path, self.store.sample_rate)
        self.install()
        server = LoopbackModelServer(
            host,
            on_stopped=self.store.close,
            reuse_port=worker,
            http_port=port,
            grace_period=grace_period,
        )
        log_json(
            log,
            event="serving",
            host=host,
            port=port,
            model=self.core.model_version,
            challenger=self.challenger[0].model_version if self.challenger else None,
            canary_percent=self.split.percent if self.challenger else None,
            steps=[s.service for s in self.steps],
            catalog_size=self.core.catalog_size,
            ranker=self.core.ranker_backend,
            encoder=self.core.text_backend,
        )
        server.start(self.models)

    # ------------------------------------------------------------------ the graph
    def route(self, playlist_id: Any) -> tuple[list[StepModel], str]:
        """(the step models, their model version) that answer a request for ``playlist_id``."""
        if self.split.challenger != self._challenger_uri:
            with self._lock:
                if self.split.challenger != self._challenger_uri:
                    self._follow(self.split.challenger)
        challenger = self.challenger
        if challenger is None:  # one model: nothing to decide
            return self.models, self.core.model_version
        if isinstance(playlist_id, int) and not isinstance(playlist_id, bool):
            playlist_id = str(playlist_id)  # as parse_recommend reads it
        key = playlist_id if isinstance(playlist_id, str) else None
        core, models = challenger if self.split.to_challenger(key) else (self.core, self.models)
        return models, core.model_version

    def walk(self, request_json: Any, models: list[StepModel] | None = None) -> tuple[dict, dict]:
        """The root Sequence, as the InferenceGraph router runs it (sync, one worker thread).

        Returns:
            (the last step's response, the first step's output — for the request log)
        """
        first = None
        previous = request_json
        for step, model in zip(self.steps, models or self.models, strict=True):
            data = request_json if step.data == "$request" else previous
            out = model.run_step(model.from_json(data))
            previous = model.to_json(out)
            first = first if first is not None else out
        return previous, first

    async def recommend(self, request: Request) -> Response:
        start = time.perf_counter()
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        status, first, out, version = 200, None, None, None
        try:
            obj = decode_json(await request.body(), self.limits)
            models, version = self.route(obj.get("playlist_id") if isinstance(obj, dict) else None)
            loop = asyncio.get_running_loop()
            out, first = await loop.run_in_executor(executor(), self.walk, obj, models)
            out = {**out, "request_id": request_id}
            response = json_response(out)
        except (RequestError, PayloadError) as exc:
            status = exc.status
            response = json_response({"error": str(exc)}, status_code=status)
        except Exception as exc:  # logged with its traceback; the server keeps serving
            log.exception("recommend %s failed", request_id)
            status = 500
            response = json_response(
                {"error": f"internal error ({type(exc).__name__}); request_id {request_id}"},
                status_code=500,
            )
        seconds = time.perf_counter() - start
        REQUESTS.labels("/v1/recommend", str(status)).inc()
        REQUEST_SECONDS.labels("/v1/recommend").observe(seconds)
        if version is not None:  # routed (a body that is not JSON reaches no model)
            RECOMMEND.labels(version, str(status)).inc()
            RECOMMEND_SECONDS.labels(version).observe(seconds)
            if (pair := self._pair()) is not None:
                self.window.record(pair, version, status, seconds)
        self._log_request(request_id, status, seconds, first, out)
        return response

    def _log_request(self, request_id, status, seconds, first, out) -> None:
        fields = {"event": "recommend", "request_id": request_id, "status": status,
                  "latency_ms": round(seconds * 1000, 3)}  # fmt: skip
        if first is None or out is None:
            log_json(access_log, **fields)
            return
        req = first["request"]
        seeds = req["tracks"]
        scores = [t["score"] for t in out["recommended_tracks"]]
        context = {
            "title": req["name"],
            "playlist_id": req.get("playlist_id"),
            "seed_uris": [t.get("track_uri") for t in seeds if t.get("track_uri")],
            "model_version": out["model_version"],
        }
        self.store.remember(request_id, context)
        row = {
            **context,
            "ts": time.time(),
            "request_id": request_id,
            "n_seeds": len(seeds),
            "n_known": len(first["seed_idx"]),
            "n_unknown": len(first["seed_text"]),
            "k": req["k"],
            "latency_ms": fields["latency_ms"],
            "top_score": scores[0] if scores else None,
            "mean_score": sum(scores) / len(scores) if scores else None,
            "recommended": [t["track_uri"] for t in out["recommended_tracks"][:20]],
        }
        self.store.maybe_log_request(row)
        log_json(access_log, **fields, n_seeds=len(seeds), k=req["k"],
                 model_version=out["model_version"])  # fmt: skip

    # ------------------------------------------------------------------ feedback
    async def feedback(self, request: Request) -> Response:
        status = 200
        try:
            event = parse_feedback(decode_json(await request.body(), self.limits), self.limits)
            loop = asyncio.get_running_loop()
            # a playlist's feedback with no known request: the version that serves the playlist
            version = self.route(event.playlist_id)[1] if event.playlist_id else None
            # committed (fsync'd) before the response is sent
            event_id, version = await loop.run_in_executor(
                executor(), self.store.record_feedback, event, version
            )
            FEEDBACK.labels(version or "unknown", str(event.liked).lower()).inc()
            response = json_response({"stored": True, "id": event_id})
        except RequestError as exc:
            status = exc.status
            response = json_response({"error": str(exc)}, status_code=status)
        except Exception as exc:
            log.exception("feedback not stored")
            status = 500
            response = json_response(
                {"error": f"feedback not stored ({type(exc).__name__})"}, status_code=500
            )
        REQUESTS.labels("/v1/feedback", str(status)).inc()
        log_json(access_log, event="feedback", status=status)
        return response

    # ------------------------------------------------------------------ canary
    async def canary(self, request: Request) -> Response:
        """``GET``: the split; ``POST {"percent": P}``: set it for every worker (0..100);
        ``POST {"percent": P, "challenger": MODEL}``: load MODEL (a folder, ``s3://`` or
        ``models:/`` URI) as the new challenger, then split (every worker follows)."""
        status = 200
        try:
            obj = None
            if request.method == "POST":
                obj = decode_json(await request.body(), self.limits)
                if not isinstance(obj, dict) or not {"percent"} <= set(obj) <= {
                    "percent",
                    "challenger",
                }:
                    raise RequestError(
                        'canary: expected {"percent": P} or {"percent": P, "challenger": '
                        f"MODEL}}, got {obj!r:.100}"
                    )
                try:
                    check_percent(obj["percent"])
                except ValueError as exc:
                    raise RequestError(f"canary: {exc}") from exc
            if "challenger" in (obj or {}):
                await self._start_canary(obj["percent"], obj["challenger"])
            elif obj is not None and self.challenger is None:
                raise RequestError(
                    'no challenger: start the server with --challenger DIR, or POST {"percent": '
                    'P, "challenger": MODEL}',
                    409,
                )
            elif obj is not None:
                self.split.set(obj["percent"])  # GET: the state (challenger null when none)
            state = self.canary_state()
            response = json_response(state)
        except RequestError as exc:
            status, state = exc.status, {}
            response = json_response({"error": str(exc)}, status_code=status)
        REQUESTS.labels("/v1/canary", str(status)).inc()
        fields = {k: v for k, v in state.items() if k != "window"}
        log_json(log, event="canary", method=request.method, status=status, **fields)
        return response

    def canary_state(self) -> dict[str, Any]:
        """``{"champion", "challenger", "percent", "window"}``: the model versions, the
        challenger's share and both versions' answers since this pair began to split traffic
        (:class:`~llarapp.serving.canary.CanaryWindow`)."""
        pair = self._pair()
        return {
            "champion": self.core.model_version,
            "challenger": pair[1] if pair else None,
            "percent": self.split.percent,
            "window": self.window.summary(pair),
        }

    def _pair(self) -> tuple[str, str] | None:
        """(champion, challenger) model versions, None without a challenger."""
        challenger = self.challenger
        return (self.core.model_version, challenger[0].model_version) if challenger else None

    async def _start_canary(self, percent: float, uri: object) -> None:
        if not isinstance(uri, str) or not uri:
            raise RequestError(f"canary: challenger={uri!r:.100}, expected a model URI")
        loop = asyncio.get_running_loop()
        try:
            loaded = await loop.run_in_executor(executor(), self._load_challenger, uri)
        except (OSError, ValueError) as exc:  # not found, not a model, the champion again
            raise RequestError(f"canary: challenger {uri}: {exc}", 422) from exc
        with self._lock:
            self.challenger, self._challenger_uri = loaded, uri
            self.split.start(percent, uri)

    # ------------------------------------------------------------------ the page
    async def page(self) -> Response:
        """The page to try the recommender (plain HTML and JavaScript, no build step)."""
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    async def search(self, request: Request) -> Response:
        """``GET /v1/search?q=WORDS&limit=N``: catalogue tracks for the page's seed picker."""
        status = 200
        try:
            loop = asyncio.get_running_loop()
            found = await loop.run_in_executor(
                executor(), search_response, self.search_index, request.query_params
            )
            response = json_response(found)
        except RequestError as exc:
            status = exc.status
            response = json_response({"error": str(exc)}, status_code=status)
        REQUESTS.labels("/v1/search", str(status)).inc()
        return response
