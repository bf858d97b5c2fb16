"""The API ``llarapp serve`` serves, as ``GET /openapi.json`` describes it.

FastAPI describes the stock KServe routes from their pydantic models; the routes this server
adds read their body themselves (to answer 400 / 413 / 422 with a message), so their request
and response shapes are written here, from the same bounds the handlers check
(:class:`llarapp.serving.request.Limits`, :mod:`llarapp.serving.search`). Each entry is the
``openapi_extra`` of one route (``LocalServer.install``).

Two parts of the stock KServe API are not served (:class:`UnservedRoutes` answers 404 with
why, and :func:`prune_unserved` drops them from the document): the model repository
(``/v2/repository/models/NAME/load|unload``: the models are fixed at start, and unloading a
step would break every request; ``POST /v1/canary`` loads a challenger) and model versions
(``/v2/models/NAME/versions/V/...``, ``?model_version=``: KServe answers 501, not
implemented).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from llarapp.serving.request import Limits
from llarapp.serving.search import DEFAULT_LIMIT, MAX_LIMIT, MAX_QUERY_CHARS
from llarapp_kserve.common import send_error


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "what was wrong, where"}},
}


def _errors(*codes: int) -> dict[str, Any]:
    said = {
        400: "the body is not UTF-8 JSON",
        409: "no challenger to split traffic with",
        413: "the body is over the size limit",
        422: "JSON of the wrong shape, or a value out of bounds",
        500: "an internal error (logged with the request id); the server keeps serving",
    }
    return {str(c): _json(ERROR, said[c]) for c in codes}


def route_docs(limits: Limits) -> dict[str, dict[str, Any]]:
    """``{"METHOD /path": openapi_extra}`` for every route ``LocalServer.install`` adds."""
    text = {"type": "string", "maxLength": limits.max_text_chars}
    an_id = {"oneOf": [{**text, "minLength": 1}, {"type": "integer"}]}
    track = {
        "type": "object",
        "required": ["track_name", "artist_name"],
        "additionalProperties": False,
        "properties": {
            "track_name": {**text, "minLength": 1},
            "artist_name": {**text, "minLength": 1},
            "track_uri": text,
            "album_name": text,
            # other MPD track fields, accepted and ignored
            "pos": {"type": "integer"},
            "artist_uri": {"type": "string"},
            "album_uri": {"type": "string"},
            "duration_ms": {"type": "integer"},
        },
    }
    recommend = {
        "type": "object",
        "additionalProperties": False,
        "description": "a non-blank name and/or at least one seed track",
        "properties": {
            "name": {"oneOf": [text, {"type": "null"}], "description": "playlist title"},
            "tracks": {"type": "array", "maxItems": limits.max_seeds, "items": track},
            "k": {"type": "integer", "minimum": 1, "maximum": limits.max_k},
            "playlist_id": an_id,
        },
    }
    recommended = {
        "type": "object",
        "required": ["recommended_tracks", "model_version", "request_id"],
        "properties": {
            "recommended_tracks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["track_uri", "track_name", "artist_name", "score"],
                    "properties": {
                        "track_uri": {"type": "string"},
                        "track_name": {"type": "string"},
                        "artist_name": {"type": "string"},
                        "score": {"type": "number"},
                    },
                },
            },
            "model_version": {"type": "string"},
            "request_id": {"type": "string"},
        },
    }
    feedback = {
        "type": "object",
        "required": ["track_uri", "liked"],
        "additionalProperties": False,
        "description": "with request_id (from the response) and/or playlist_id",
        "properties": {
            "request_id": an_id,
            "playlist_id": an_id,
            "track_uri": {**text, "minLength": 1},
            "liked": {"type": "boolean"},
        },
    }
    stored = {
        "type": "object",
        "required": ["stored", "id"],
        "properties": {"stored": {"type": "boolean"}, "id": {"type": "integer"}},
    }
    quantile = {"type": ["number", "null"]}
    answers = {
        "type": "object",
        "required": ["requests", "errors", "p50_ms", "p99_ms"],
        "properties": {
            "requests": {"type": "integer"},
            "errors": {"type": "integer"},
            "p50_ms": quantile,
            "p99_ms": quantile,
        },
    }
    split = {
        "type": "object",
        "required": ["champion", "challenger", "percent", "window"],
        "properties": {
            "champion": {"type": "string"},
            "challenger": {"type": ["string", "null"]},
            "percent": {"type": "number"},
            "window": {
                "type": "object",
                "description": "each version's answers since this champion / challenger pair "
                "began to split traffic (what `llarapp rollout` compares)",
                "required": ["since", "versions"],
                "properties": {
                    "since": {"type": ["number", "null"]},
                    "versions": {"type": "object", "additionalProperties": answers},
                },
            },
        },
    }
    canary = {
        "type": "object",
        "required": ["percent"],
        "additionalProperties": False,
        "properties": {
            "percent": {"type": "number", "minimum": 0, "maximum": 100},
            "challenger": {
                "type": "string",
                "minLength": 1,
                "description": "a model folder, s3:// or models:/ URI to load as challenger",
            },
        },
    }
    found = {
        "type": "object",
        "required": ["query", "tracks"],
        "properties": {
            "query": {"type": "string"},
            "tracks": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        k: {"type": "string"} for k in track["required"] + ["track_uri"]
                    },
                },
            },
        },
    }

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    return {
        "POST /v1/recommend": {
            "summary": "The next tracks for a playlist (title and/or seed tracks)",
            "requestBody": body(recommend),
            "responses": {
                "200": _json(recommended, "ranked tracks"),
                **_errors(400, 413, 422, 500),
            },
        },
        "POST /v1/feedback": {
            "summary": "A like or dislike of a recommended track (stored before the answer)",
            "requestBody": body(feedback),
            "responses": {"200": _json(stored, "stored"), **_errors(400, 413, 422, 500)},
        },
        "GET /v1/canary": {
            "summary": "The traffic split between champion and challenger",
            "responses": {"200": _json(split, "the split")},
        },
        "POST /v1/canary": {
            "summary": "Set the challenger's share (and load a new challenger)",
            "requestBody": body(canary),
            "responses": {"200": _json(split, "the split"), **_errors(400, 409, 413, 422)},
        },
        "GET /v1/search": {
            "summary": "Catalogue tracks whose name or artist holds every word of q",
            "parameters": [
                {
                    "name": "q",
                    "in": "query",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_LIMIT,
                        "default": DEFAULT_LIMIT,
                    },
                },
            ],
            "responses": {"200": _json(found, "matching tracks"), **_errors(422)},
        },
    }


def unserved(path: str, query: bytes) -> str | None:
    """Why ``path?query`` is not served (the 404's message), or None when it is."""
    if path.startswith("/v2/repository/"):
        return (
            f"{path}: the model repository API is not served; the models are fixed when the "
            "server starts (--model), and POST /v1/canary loads a challenger"
        )
    versioned = "/versions/" in path or "model_version" in parse_qs(query.decode("latin-1"))
    if path.startswith("/v2/models/") and versioned:
        return f"{path}: model versions are not served; ask /v2/models/NAME without a version"
    return None


class UnservedRoutes:
    """ASGI middleware: the stock routes this server does not serve answer 404, saying why."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            reason = unserved(scope["path"], scope.get("query_string", b""))
            if reason is not None:
                return await send_error(send, 404, reason)
        return await self.app(scope, receive, send)


def prune_unserved(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (an OpenAPI document, changed in place) without the unserved routes and
    ``model_version`` parameters."""
    paths = schema.get("paths", {})
    for path in list(paths):
        if unserved(path, b"") is not None or "/versions/" in path:
            del paths[path]
            continue
        for operation in paths[path].values():
            params = operation.get("parameters")
            if params:
                operation["parameters"] = [p for p in params if p.get("name") != "model_version"]
    return schema
