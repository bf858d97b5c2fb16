"""What a person sends, checked: recommendation requests and like/dislike feedback.

A recommendation request (JSON object)::

    {"name": "summer",                                   # playlist title, optional
     "tracks": [{"track_name": "...", "artist_name": "...",
                 "track_uri": "spotify:track:..."}],       # seeds, optional, uri optional
     "k": 50}                                             # optional, 1..Limits.max_k

At least one of a non-blank ``name`` or one seed is needed. Track objects may carry
``album_name`` and the other MPD track fields (``pos``, ``artist_uri``, ``album_uri``,
``duration_ms``), which are ignored; any other key is an error (typos surface instead of being
dropped). Feedback (JSON object)::

    {"request_id": "...", "playlist_id": "...", "track_uri": "...", "liked": true}

with ``track_uri``, ``liked`` and at least one of ``request_id`` / ``playlist_id``.

Errors are :class:`RequestError` with the HTTP status to answer: 413 for an oversized body,
400 for a body that is not UTF-8 JSON, 422 for JSON of the wrong shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from llarapp.data.dataset import Case, Track


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for."""

    max_body_bytes: int = 64 * 1024  # whole HTTP body
    max_seeds: int = 100  # seed tracks per request (MPD cases go up to 100)
    max_k: int = 1000  # recommendations per request
    default_k: int = 50  # when the request has no "k"
    max_text_chars: int = 500  # any one title / name / uri string


class RequestError(ValueError):
    """A request that cannot be served; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class RecommendRequest:
    """A checked recommendation request."""

    name: str | None  # stripped title, None when absent or blank
    tracks: tuple[Track, ...] = ()
    k: int = 50
    playlist_id: str | None = None  # the caller's id for the playlist, echoed into logs

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tracks": [{k: v for k, v in vars(t).items() if v is not None} for t in self.tracks],
            "k": self.k,
            "playlist_id": self.playlist_id,
        }


@dataclass(frozen=True)
class FeedbackEvent:
    """One like or dislike of a recommended track."""

    track_uri: str
    liked: bool
    request_id: str | None = None
    playlist_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_REQUEST_KEYS = {"name", "tracks", "k", "playlist_id"}
_TRACK_KEYS = {"track_name", "artist_name", "track_uri", "album_name"}
_IGNORED_TRACK_KEYS = {"pos", "artist_uri", "album_uri", "duration_ms"}
_FEEDBACK_KEYS = {"request_id", "playlist_id", "track_uri", "liked"}


def decode_json(body: bytes, limits: Limits = Limits()) -> Any:
    """Bytes of an HTTP body -> the JSON value, or a :class:`RequestError` (413 / 400)."""
    if len(body) > limits.max_body_bytes:
        raise RequestError(
            f"request body is {len(body)} bytes; the limit is {limits.max_body_bytes}", 413
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(
            f"request body is not UTF-8 (byte {exc.start}: {exc.reason}); send UTF-8 JSON", 400
        ) from exc
    if not text.strip():
        raise RequestError("request body is empty; expected a JSON object", 400)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            400,
        ) from exc


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _string(value: Any, where: str, limits: Limits, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise RequestError(f"{where}: expected a string, got {_type_name(value)}")
    if len(value) > limits.max_text_chars:
        raise RequestError(
            f"{where}: {len(value)} characters; the limit is {limits.max_text_chars}"
        )
    if required and not value.strip():
        raise RequestError(f"{where}: must not be empty")
    return value


def _check_keys(obj: dict, allowed: set[str], where: str, ignored: set[str] = frozenset()) -> None:
    unknown = sorted(set(obj) - allowed - ignored)
    if unknown:
        raise RequestError(f"{where}: unknown field(s) {unknown}; expected {sorted(allowed)}")


def parse_recommend(obj: Any, limits: Limits = Limits()) -> RecommendRequest:
    """A decoded JSON value -> :class:`RecommendRequest`, or a :class:`RequestError` (422)."""
    if not isinstance(obj, dict):
        raise RequestError(f"request: expected a JSON object, got {_type_name(obj)}")
    _check_keys(obj, _REQUEST_KEYS, "request")
    name = _string(obj.get("name"), "name", limits, required=False)
    name = name.strip() or None if name is not None else None
    playlist_id = obj.get("playlist_id")
    if playlist_id is not None:
        if isinstance(playlist_id, int) and not isinstance(playlist_id, bool):
            playlist_id = str(playlist_id)
        playlist_id = _string(playlist_id, "playlist_id", limits, required=True)
    k = obj.get("k", limits.default_k)
    if isinstance(k, bool) or not isinstance(k, int):
        raise RequestError(f"k: expected an integer, got {_type_name(k)}")
    if not 1 <= k <= limits.max_k:
        raise RequestError(f"k={k}: expected 1 <= k <= {limits.max_k}")
    raw = obj.get("tracks", [])
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise RequestError(f"tracks: expected a list of track objects, got {_type_name(raw)}")
    if len(raw) > limits.max_seeds:
        raise RequestError(f"tracks: {len(raw)} seed tracks; the limit is {limits.max_seeds}")
    tracks = []
    for i, t in enumerate(raw):
        where = f"tracks[{i}]"
        if not isinstance(t, dict):
            raise RequestError(f"{where}: expected an object, got {_type_name(t)}")
        _check_keys(t, _TRACK_KEYS, where, _IGNORED_TRACK_KEYS)
        missing = [key for key in ("track_name", "artist_name") if key not in t]
        if missing:
            raise RequestError(f"{where}: missing field(s) {missing}")
        uri = _string(t.get("track_uri"), f"{where}.track_uri", limits, required=False)
        album = _string(t.get("album_name"), f"{where}.album_name", limits, required=False)
        tracks.append(
            Track(
                _string(t["track_name"], f"{where}.track_name", limits, required=True).strip(),
                _string(t["artist_name"], f"{where}.artist_name", limits, required=True).strip(),
                uri.strip() or None if uri is not None else None,
                album.strip() or None if album is not None else None,
            )
        )
    if name is None and not tracks:
        raise RequestError(
            "request: nothing to recommend from; give a non-empty 'name' and/or 'tracks'"
        )
    return RecommendRequest(name, tuple(tracks), k, playlist_id)


def request_body(case: Case, k: int) -> dict:
    """The ``/v1/recommend`` body of a case, in the documented shape (``name`` when it has a
    title; ``tracks`` with names and URIs; ``k``)."""
    tracks = [
        {"track_name": t.track_name, "artist_name": t.artist_name}
        | ({"track_uri": t.track_uri} if t.track_uri else {})
        for t in case.seeds
    ]
    return {"tracks": tracks, "k": k} | ({"name": case.title} if case.title else {})


def parse_feedback(obj: Any, limits: Limits = Limits()) -> FeedbackEvent:
    """A decoded JSON value -> :class:`FeedbackEvent`, or a :class:`RequestError` (422)."""
    if not isinstance(obj, dict):
        raise RequestError(f"feedback: expected a JSON object, got {_type_name(obj)}")
    _check_keys(obj, _FEEDBACK_KEYS, "feedback")
    if "track_uri" not in obj or "liked" not in obj:
        missing = [key for key in ("track_uri", "liked") if key not in obj]
        raise RequestError(f"feedback: missing field(s) {missing}")
    liked = obj["liked"]
    if not isinstance(liked, bool):
        raise RequestError(f"liked: expected true or false, got {_type_name(liked)}")
    ids = {}
    for key in ("request_id", "playlist_id"):
        value = obj.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        ids[key] = _string(value, key, limits, required=True) if value is not None else None
    if ids["request_id"] is None and ids["playlist_id"] is None:
        raise RequestError("feedback: give 'request_id' (from the response) or 'playlist_id'")
    uri = _string(obj["track_uri"], "track_uri", limits, required=True).strip()
    return FeedbackEvent(uri, liked, ids["request_id"], ids["playlist_id"])
