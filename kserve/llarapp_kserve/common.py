"""What the three model servers share: the step model base class, metrics, body limits.

A :class:`StepModel` serves one step of :class:`llarapp.serving.engine.ServingEngine` on the
KServe data plane:

- v1 / JSON (``POST /v1/models/NAME:predict``): the graph payload as JSON — what the
  InferenceGraph ``Sequence`` sends from step to step, and what a person can send by hand;
- Open Inference Protocol v2 (``POST /v2/models/NAME/infer``): named tensors (see each
  server's ``model.py``).

``load()`` resolves the storage URI, loads the model, and sets ``ready`` only after a real
inference through this step succeeded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from prometheus_client import Counter, Histogram

from llarapp.serving.request import Limits, RequestError, decode_json

log = logging.getLogger("llarapp.serving")
access_log = logging.getLogger("llarapp.serving.access")

DEFAULT_STORAGE_URI = "/mnt/models"
#: person-facing routes read at most Limits.max_body_bytes; step-to-step payloads carry the
#: candidate features (N x F floats as JSON), so the retriever / ranker routes allow more
STEP_BODY_BYTES = 8 * 1024 * 1024

_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.015, 0.03, 0.06, 0.12, 0.25, 0.5, 1.0, 2.5)
STEP_SECONDS = Histogram(
    "llarapp_step_seconds", "Latency of one graph step", ["model", "step"], buckets=_BUCKETS
)
STEP_ERRORS = Counter("llarapp_step_errors_total", "Failed graph steps", ["model", "step", "kind"])
REQUESTS = Counter("llarapp_requests_total", "HTTP requests by route and status", ["route", "code"])
REQUEST_SECONDS = Histogram(
    "llarapp_request_seconds", "Latency of whole routes", ["route"], buckets=_BUCKETS
)
FEEDBACK = Counter(
    "llarapp_feedback_total", "Feedback events stored, by model version", ["model_version", "liked"]
)
#: /v1/recommend by the model version that answered (champion or challenger): what a rollout
#: controller compares (error rate, latency)
RECOMMEND = Counter(
    "llarapp_recommend_total", "/v1/recommend answers by model version", ["model_version", "code"]
)
RECOMMEND_SECONDS = Histogram(
    "llarapp_recommend_seconds",
    "/v1/recommend latency by model version",
    ["model_version"],
    buckets=_BUCKETS,
)


class PayloadError(InvalidInput):
    """Bad input: kserve answers 400 on its routes; our JSON routes use ``status``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def executor() -> ThreadPoolExecutor:
    """One small pool for the steps (numpy / torch release the GIL for the heavy parts)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        threads = int(os.environ.get("LLARAPP_SERVE_THREADS", "4"))
        _EXECUTOR = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="llarapp-step")
    return _EXECUTOR


_EXECUTOR: ThreadPoolExecutor | None = None


class StepModel(Model):
    """One engine step as a kserve model. Subclasses set ``step`` and the v2 conversion."""

    step: str = ""  # "encode" | "retrieve" | "rank"

    def __init__(self, name: str, storage_uri: str = DEFAULT_STORAGE_URI, core=None) -> None:
        super().__init__(name)
        self.storage_uri = storage_uri
        self.core = core  # ServingEngine, shared by the three models of the local server
        # (not `engine`: kserve reads Model.engine as "has an engine to start")

    # ------------------------------------------------------------------ lifecycle
    def load(self) -> bool:
        if self.core is None:
            from llarapp.serving.engine import ServingEngine

            self.core = ServingEngine.load(self.storage_uri, steps=(self.step,))
        self.self_test()
        self.ready = True
        log.info("%s ready (model %s)", self.name, self.core.model_version)
        return self.ready

    def self_test(self) -> None:
        """A real inference through this step; raises when it fails (then never ready)."""
        from llarapp.serving.engine import warmup_payload

        payload = warmup_payload(self.core, self.step)
        out = self.run_step(payload)
        if not out:
            raise RuntimeError(f"{self.name}: self-test inference returned nothing")

    # ------------------------------------------------------------------ the step
    def run_step(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The step on a graph payload, timed and counted (sync; call from a worker thread)."""
        start = time.perf_counter()
        try:
            return getattr(self.core, self.step)(payload)
        except RequestError as exc:
            STEP_ERRORS.labels(self.name, self.step, "input").inc()
            raise PayloadError(f"{self.name}: {exc.message}", exc.status) from exc
        except Exception:
            STEP_ERRORS.labels(self.name, self.step, "internal").inc()
            raise
        finally:
            STEP_SECONDS.labels(self.name, self.step).observe(time.perf_counter() - start)

    async def predict(self, payload, headers: dict[str, str] | None = None):
        loop = asyncio.get_running_loop()
        if isinstance(payload, InferRequest):
            return await loop.run_in_executor(executor(), self._predict_v2, payload)
        if isinstance(payload, bytes | bytearray):  # sent without a JSON content type
            try:
                payload = decode_json(bytes(payload), Limits(max_body_bytes=STEP_BODY_BYTES))
            except RequestError as exc:
                raise PayloadError(f"{self.name}: {exc.message}", exc.status) from exc
        if not isinstance(payload, dict):
            raise PayloadError(f"{self.name}: expected a JSON object, got {type(payload).__name__}")
        out = await loop.run_in_executor(executor(), self.run_step, self.from_json(payload))
        return self.to_json(out)

    def from_json(self, payload: dict[str, Any]) -> Any:
        return payload

    def to_json(self, out: dict[str, Any]) -> dict[str, Any]:
        return out

    # ------------------------------------------------------------------ v2 helpers
    def _predict_v2(self, request: InferRequest) -> InferResponse:
        outputs = self.predict_tensors({i.name: _tensor(i) for i in request.inputs}, request)
        return InferResponse(
            response_id=request.id or "",
            model_name=self.name,
            infer_outputs=[_output(name, value) for name, value in outputs.items()],
            model_version=self.core.model_version,
        )

    def predict_tensors(self, inputs: dict[str, np.ndarray], request) -> dict[str, np.ndarray]:
        raise NotImplementedError


def _tensor(inp) -> np.ndarray:
    try:
        return inp.as_numpy()
    except (ValueError, TypeError) as exc:
        raise PayloadError(f"input {inp.name!r}: {exc}") from exc


_DATATYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.int64): "INT64",
    np.dtype(object): "BYTES",
}


def _output(name: str, value: np.ndarray) -> InferOutput:
    value = np.asarray(value)
    datatype = _DATATYPES[value.dtype]
    out = InferOutput(name=name, shape=list(value.shape), datatype=datatype)
    out.set_data_from_numpy(value, binary_data=False)
    return out


def require(inputs: dict[str, np.ndarray], name: str, dtype, ndim: int, optional=False):
    """A named v2 input as ``dtype`` with ``ndim`` dimensions (PayloadError otherwise)."""
    if name not in inputs:
        if optional:
            return None
        raise PayloadError(f"v2: missing input {name!r}; inputs given: {sorted(inputs)}")
    arr = inputs[name]
    if arr.ndim != ndim:
        raise PayloadError(f"v2: input {name!r} has shape {list(arr.shape)}; expected {ndim}-D")
    try:
        return arr.astype(dtype, copy=False)
    except (TypeError, ValueError) as exc:
        raise PayloadError(f"v2: input {name!r}: {exc}") from exc


def log_json(logger: logging.Logger, **fields: Any) -> None:
    """One structured (JSON) log line."""
    logger.info(json.dumps(fields, default=str, separators=(",", ":")))


class BodyLimit:
    """ASGI middleware: bodies over the route's limit get 413 before any handler reads them.

    Reads the body ahead (bounded) and replays it, so chunked uploads without a
    Content-Length are cut off at the limit too.
    """

    def __init__(self, app, small: int, large: int = STEP_BODY_BYTES, large_prefixes=()) -> None:
        self.app, self.small, self.large = app, small, large
        self.large_prefixes = tuple(large_prefixes)

    def limit(self, path: str) -> int:
        return self.large if path.startswith(self.large_prefixes) else self.small

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        limit = self.limit(scope["path"])
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _too_large(scope, send, int(declared), limit)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await _too_large(scope, send, size, limit)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _too_large(scope, send, size: int, limit: int) -> None:
    REQUESTS.labels(scope["path"], "413").inc()
    message = f"request body is {size}+ bytes; the limit for {scope['path']} is {limit}"
    await send_error(send, 413, message)


async def send_error(send, status: int, message: str) -> None:
    """Answer ``{"error": message}`` with ``status`` from ASGI middleware (connection closed:
    the request body may be unread)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps({"error": message}).encode()})


def serve_one(model_cls, default_name: str) -> None:
    """``__main__`` of a cluster server: kserve's arguments plus ``--storage_uri``."""
    import argparse

    import kserve
    from kserve import model_server

    from llarapp.serving.request import Limits

    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument(
        "--storage_uri",
        default=os.environ.get("LLARAPP_MODEL_URI", DEFAULT_STORAGE_URI),
        help="model folder, s3:// prefix or models:/NAME@ALIAS (default /mnt/models)",
    )
    args, _ = parser.parse_known_args()
    name = args.model_name if args.model_name != "model" else default_name
    # the encoder reads people's requests; the others read step payloads (features)
    limit = Limits().max_body_bytes if model_cls.step == "encode" else STEP_BODY_BYTES
    model_server.app.add_middleware(BodyLimit, small=limit, large=limit)
    model = model_cls(name, args.storage_uri)
    model.load()
    kserve.ModelServer().start([model])
