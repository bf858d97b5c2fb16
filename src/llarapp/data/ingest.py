"""Ingest Spotify Million Playlist Dataset (MPD) slice files, with validation and quarantine.

Data contract
-------------
Files in: MPD slice files ``mpd.slice.A-B.json`` = ``{"info": {...}, "playlists": [...]}``, read
from a local folder, a glob, a single file or ``s3://bucket/prefix`` (see :func:`iter_sources`).
Both the full MPD fields and reduced slices are accepted. Required per playlist: ``name``
(non-empty string), ``pid`` (int >= 0), ``tracks`` (non-empty list); per track: ``track_uri``
(``spotify:track:`` + 22 base-62 characters), ``track_name`` and ``artist_name`` (non-empty
strings). Everything else (``num_followers``, ``num_edits``, ``modified_at``, ``collaborative``,
``duration_ms``, ``description``, ``pos``, ``album_name``, ``artist_uri``, ``album_uri``...)
is optional, but type-checked when present. Tracks are ordered by ``pos`` when present, by
list order otherwise.

Files out (in ``out_dir``; schemas in :mod:`llarapp.data.schema`):

- ``playlists.parquet`` (:data:`~llarapp.data.schema.PLAYLISTS`): one row per valid playlist;
  ``num_tracks`` counts the tracks kept; ``source`` is the slice file's base name.
- ``tracks.parquet`` (:data:`~llarapp.data.schema.TRACKS`): one row per distinct track URI,
  with the first spelling met.
- ``interactions.parquet`` (:data:`~llarapp.data.schema.INTERACTIONS`): one row per kept
  (playlist, track), ``pos`` 0-based and contiguous.
- ``quarantine.jsonl``: one JSON object per rejected record: ``source`` (full path or URI),
  ``pid`` (or null), ``track_index`` (index in the source ``tracks`` list, or null),
  ``level`` (``file`` | ``playlist`` | ``track``), ``reason`` (text saying what, where and what
  was expected), ``kind`` (short stable key, also counted in the report) and ``record`` (the
  offending JSON text, cut to about 500 characters).
- ``negatives.parquet`` (with ``feedback``): the exported batches' disliked tracks, one table
  (:data:`~llarapp.data.schema.NEGATIVES`), which training reads as the ranker's hard negatives.
- ``ingest_report.json``: the :class:`IngestReport`. It is written last: its presence marks a
  complete ingest. Tables are written under temporary names and renamed at the end.

Reason kinds (``kind`` in the quarantine, keys of ``reasons`` in the report): ``not_json``,
``truncated_file``, ``missing_field``, ``wrong_type``, ``negative_value``, ``text_too_long``,
``bad_text`` (a lone surrogate that cannot be stored as UTF-8), ``too_many_tracks``,
``empty_playlist``, ``duplicate_pid``, ``bad_track_uri``, ``duplicate_track``.

Rejection is as narrow as possible: a bad track drops that row only, a bad playlist drops that
playlist only, a bad file drops only what cannot be parsed (a truncated file keeps every
complete playlist before the cut). Duplicate pids: the first valid playlist wins. Duplicate
track URIs inside a playlist: the first occurrence (in position order) wins.

Memory is bounded by one slice plus the sets of accepted pids and distinct track URIs: slices
are processed one at a time and appended to ``pyarrow.parquet.ParquetWriter`` row groups.
"""

from __future__ import annotations

import glob as globlib
import json
import logging
import os
import re
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from llarapp.data import schema

logger = logging.getLogger(__name__)

TRACK_URI_PATTERN = r"^spotify:track:[0-9A-Za-z]{22}$"
_TRACK_URI_RE = re.compile(r"spotify:track:[0-9A-Za-z]{22}")  # used with fullmatch
_SLICE_RE = re.compile(r"^mpd\.slice\.(\d+)-(\d+)\.json$")
_WS_RE = re.compile(r"[ \t\n\r]*")
_RECORD_CHARS = 500
_RECORD_ENCODER = json.JSONEncoder(ensure_ascii=False)
_json_str = (
    json.encoder.encode_basestring
)  # C-accelerated; same as json.dumps(str, ensure_ascii=False)
_ROW_GROUP_ROWS = 500_000  # interactions buffered before a row group is flushed

_PLAYLIST_INT_FIELDS = ("num_tracks", "num_followers", "num_edits", "modified_at", "duration_ms")
_TRACK_REQUIRED = ("track_uri", "track_name", "artist_name")
_TRACK_OPTIONAL_STR = ("album_name", "artist_uri", "album_uri")
_TRACK_OPTIONAL_INT = ("pos", "duration_ms")


class NoSourceFilesError(FileNotFoundError, ValueError):
    """The ingest source matched no files (catchable as FileNotFoundError or ValueError)."""


@dataclass
class IngestLimits:
    """Size limits beyond which a record is considered absurd and quarantined.

    Attributes:
        max_tracks_per_playlist: Most tracks a playlist may list (MPD's maximum is 250).
        max_text_length: Longest allowed string (playlist name or description, track, artist,
            album name or URI).
    """

    max_tracks_per_playlist: int = 1000
    max_text_length: int = 1000

    def __post_init__(self) -> None:
        for name in ("max_tracks_per_playlist", "max_text_length"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"IngestLimits.{name} must be a positive int, got {value!r}")


@dataclass
class IngestReport:
    """Counts from one ingest run (written to ``ingest_report.json``).

    Invariants: ``playlists_in == playlists_ok + playlists_quarantined`` and
    ``tracks_in == interactions_ok + tracks_quarantined + tracks_dropped_with_playlist``.
    Records lost in the unparseable part of a file are not counted in ``*_in``; they show up as
    ``files_quarantined`` and a ``truncated_file`` / ``not_json`` reason.

    Attributes:
        source: The source as given.
        out_dir: The output folder.
        files_read: Files (or objects) read.
        files_quarantined: Files with a file-level defect (partly or wholly unparseable).
        playlists_in: Playlist entries parsed from the files.
        playlists_ok: Playlists written.
        playlists_quarantined: Playlists rejected (one quarantine record each).
        tracks_in: Track entries in the parsed playlists.
        interactions_ok: Interaction rows written.
        tracks_quarantined: Track rows rejected one by one (duplicates included).
        duplicate_tracks_dropped: Of those, repeated track URIs inside a playlist.
        tracks_dropped_with_playlist: Track entries of playlists rejected as a whole.
        distinct_tracks: Rows of the track table.
        quarantine_records: Lines in ``quarantine.jsonl``.
        reasons: Quarantine records per reason kind.
        stopped_early: Whether ``max_playlists`` stopped the run.
        limits: The limits used.
        seconds: Wall time.
        peak_rss_mb: Peak resident memory of the process, in MiB.
        feedback_batches: Exported feedback batches read (``ingest(..., feedback=...)``).
        negatives: Rows of ``negatives.parquet`` (disliked tracks from those batches).
    """

    source: str = ""
    out_dir: str = ""
    files_read: int = 0
    files_quarantined: int = 0
    playlists_in: int = 0
    playlists_ok: int = 0
    playlists_quarantined: int = 0
    tracks_in: int = 0
    interactions_ok: int = 0
    tracks_quarantined: int = 0
    duplicate_tracks_dropped: int = 0
    tracks_dropped_with_playlist: int = 0
    distinct_tracks: int = 0
    quarantine_records: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    stopped_early: bool = False
    limits: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    feedback_batches: int = 0
    negatives: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-serialisable dict."""
        out = asdict(self)
        out["reasons"] = dict(sorted(self.reasons.items()))
        return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss`` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    divisor = 1024 * 1024 if sys.platform == "darwin" else 1024
    return round(peak / divisor, 1)


# ----------------------------------------------------------------------------- sources


def _slice_sort_key(name: str) -> tuple[int, int, str]:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    match = _SLICE_RE.match(base)
    if match:
        return (0, int(match.group(1)), name)
    return (1, 0, name)


def _sort_slices(names: Iterable[str]) -> list[str]:
    return sorted(names, key=_slice_sort_key)


def _prefer_slices(names: list[str]) -> list[str]:
    """Keep ``mpd.slice.*.json`` names when there are any, else every name given."""
    slices = [n for n in names if _SLICE_RE.match(n.rsplit("/", 1)[-1])]
    return slices or names


def iter_sources(source: str) -> list[str]:
    """Resolve an ingest source into the ordered list of slice files to read.

    Args:
        source: One of: a folder (its ``mpd.slice.*.json`` files, or every ``*.json`` when it has
            none such), a glob pattern (``**`` allowed), a single file, or ``s3://bucket/prefix``
            (objects under the prefix, same preference as for a folder).

    Returns:
        Paths or ``s3://`` URIs, sorted by the numeric start of the slice range
        (``mpd.slice.1000-1999.json`` after ``mpd.slice.999-...``), other names after, by name.

    Raises:
        NoSourceFilesError: If the source matches no file (a ``FileNotFoundError`` and a
            ``ValueError``).
    """
    source = str(source)
    if source.startswith("s3://"):
        from llarapp.data import storage

        names = _prefer_slices(storage.list_objects(source, pattern="*.json"))
        where = "S3 prefix"
    elif Path(source).is_dir():
        folder = Path(source)
        names = [str(p) for p in folder.glob("mpd.slice.*.json") if p.is_file()]
        if not names:
            names = [str(p) for p in folder.glob("*.json") if p.is_file()]
        where = "folder (expected mpd.slice.*.json or *.json files inside)"
    elif Path(source).is_file():
        return [source]
    elif globlib.has_magic(source):
        names = [p for p in globlib.glob(source, recursive=True) if Path(p).is_file()]
        where = "glob"
    else:
        raise NoSourceFilesError(
            f"ingest source {source!r} does not exist: expected a folder, a glob, a file or "
            "s3://bucket/prefix"
        )
    if not names:
        raise NoSourceFilesError(f"ingest source {source!r} ({where}) matches no files")
    return _sort_slices(names)


# ----------------------------------------------------------------------------- parsing


@dataclass
class _FileDefect:
    kind: str
    reason: str
    record: str


def _byte_offset(text: str, pos: int) -> int:
    return len(text[:pos].encode("utf-8", errors="replace"))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "bool"}.get(
        type(value), type(value).__name__
    )


def _load_slice(text: str, name: str) -> tuple[list[Any], _FileDefect | None]:
    """Parse a slice's text into its playlist entries, salvaging what precedes a defect."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        return _salvage(text, name, exc)
    if not isinstance(doc, dict):
        return [], _FileDefect(
            "wrong_type",
            f"{name}: top-level JSON value is {_type_name(doc)}, "
            "expected an object with a 'playlists' array",
            text[:_RECORD_CHARS],
        )
    if "playlists" not in doc:
        return [], _FileDefect(
            "missing_field",
            f"{name}: top-level object has no 'playlists' field "
            f"(keys: {sorted(doc)[:10]}), expected a 'playlists' array",
            text[:_RECORD_CHARS],
        )
    playlists = doc["playlists"]
    if not isinstance(playlists, list):
        return [], _FileDefect(
            "wrong_type",
            f"{name}: 'playlists' is {_type_name(playlists)}, expected an array",
            text[:_RECORD_CHARS],
        )
    return playlists, None


class _ParseError(Exception):
    """Internal: the incremental parser met a defect at ``pos``."""

    def __init__(self, pos: int, msg: str) -> None:
        super().__init__(msg)
        self.pos = pos
        self.msg = msg


def _salvage(text: str, name: str, error: json.JSONDecodeError) -> tuple[list[Any], _FileDefect]:
    """Parse a broken slice member by member, keeping every complete playlist before the cut."""
    decoder = json.JSONDecoder()
    playlists: list[Any] = []
    in_array = False
    array_done = False

    def skip(i: int) -> int:
        return _WS_RE.match(text, i).end()  # type: ignore[union-attr]

    def decode(i: int) -> tuple[Any, int]:
        try:
            return decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise _ParseError(i, exc.msg) from exc

    def expect(i: int, char: str) -> int:
        if not text.startswith(char, i):
            found = repr(text[i]) if i < len(text) else "end of file"
            raise _ParseError(i, f"expected {char!r}, found {found}")
        return skip(i + 1)

    try:
        i = expect(skip(0), "{")
        while not text.startswith("}", i):
            key, i = decode(i)
            i = expect(skip(i), ":")
            if key == "playlists" and not array_done:
                i = expect(i, "[")
                in_array = True
                while not text.startswith("]", i):
                    item, i = decode(i)
                    playlists.append(item)
                    i = skip(i)
                    if not text.startswith("]", i):
                        i = expect(i, ",")
                in_array = False
                array_done = True
                i = skip(i + 1)
            else:
                _, i = decode(i)
                i = skip(i)
            if not text.startswith("}", i):
                i = expect(i, ",")
        i = skip(i + 1)
        if i < len(text):
            raise _ParseError(i, "extra data after the top-level object")
    except _ParseError as broken:
        at = _byte_offset(text, broken.pos)
        record = text[broken.pos : broken.pos + _RECORD_CHARS]
        if in_array:
            return playlists, _FileDefect(
                "truncated_file",
                f"{name}: truncated at byte {at}: playlists[{len(playlists)}] onwards could not "
                f"be parsed ({broken.msg}); {len(playlists)} complete playlists before it kept",
                record,
            )
        if array_done:
            return playlists, _FileDefect(
                "truncated_file",
                f"{name}: truncated at byte {at} after the playlists array ({broken.msg}); "
                f"all {len(playlists)} playlists kept",
                record,
            )
        return [], _FileDefect(
            "not_json",
            f"{name}: not valid JSON: {error.msg} at line {error.lineno} column {error.colno} "
            f"(byte {_byte_offset(text, error.pos)}); expected an MPD slice object",
            text[:_RECORD_CHARS],
        )
    # json.loads failed but the incremental parse did not: cannot happen for valid
    # grammar; report the original error without losing the parsed playlists.
    return (
        playlists,
        _FileDefect(  # pragma: no cover
            "not_json",
            f"{name}: {error.msg} at byte {_byte_offset(text, error.pos)}",
            text[:_RECORD_CHARS],
        ),
    )


def _utf8_ok(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 (JSON escapes can smuggle in lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _snippet(value: Any) -> str:
    """The offending record as JSON text, cut to about 500 characters."""
    if isinstance(value, dict) and isinstance(value.get("tracks"), list):
        value = {**value, "tracks": value["tracks"][:3]}
    try:
        text = _RECORD_ENCODER.encode(value)
    except (TypeError, ValueError):  # pragma: no cover - json values always serialise
        text = repr(value)
    if len(text) > _RECORD_CHARS:
        return text[:_RECORD_CHARS] + "..."
    return text


# ----------------------------------------------------------------------------- ingest


class _Ingestor:
    """Holds the cross-slice state (seen pids and tracks), row buffers and writers."""

    def __init__(self, out_dir: Path, limits: IngestLimits, report: IngestReport) -> None:
        self.limits = limits
        self.report = report
        self.reasons: Counter[str] = Counter()
        self.seen_pids: set[int] = set()
        self.seen_tracks: set[str] = set()
        self.out_dir = out_dir
        token = f".tmp-{os.getpid()}"
        self.final = {
            "playlists": out_dir / schema.PLAYLISTS_FILE,
            "tracks": out_dir / schema.TRACKS_FILE,
            "interactions": out_dir / schema.INTERACTIONS_FILE,
            "quarantine": out_dir / schema.QUARANTINE_FILE,
        }
        self.tmp = {k: p.with_name(p.name + token) for k, p in self.final.items()}
        self.schemas = {
            "playlists": schema.PLAYLISTS,
            "tracks": schema.TRACKS,
            "interactions": schema.INTERACTIONS,
        }
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.buffers: dict[str, dict[str, list[Any]]] = {
            k: {f.name: [] for f in s} for k, s in self.schemas.items()
        }
        self.quarantine = None

    # -- output plumbing

    def open(self) -> None:
        for key, sch in self.schemas.items():
            self.writers[key] = pq.ParquetWriter(self.tmp[key], sch, compression="zstd")
        # backslashreplace turns a lone surrogate into its JSON escape: lines stay valid JSON.
        self.quarantine = self.tmp["quarantine"].open(
            "w", encoding="utf-8", errors="backslashreplace"
        )

    def flush(self) -> None:
        for key, sch in self.schemas.items():
            cols = self.buffers[key]
            if not cols[sch.names[0]]:
                continue
            table = pa.Table.from_pydict(cols, schema=sch)
            self.writers[key].write_table(table)
            self.buffers[key] = {name: [] for name in sch.names}

    def maybe_flush(self) -> None:
        if len(self.buffers["interactions"]["pid"]) >= _ROW_GROUP_ROWS:
            self.flush()

    def close(self, ok: bool) -> None:
        """Close writers; on success rename temp files into place, else delete them."""
        try:
            try:
                if ok:
                    self.flush()
            finally:
                for writer in self.writers.values():
                    writer.close()
                if self.quarantine is not None:
                    self.quarantine.close()
            if ok:
                for key, tmp in self.tmp.items():
                    os.replace(tmp, self.final[key])
        finally:
            for tmp in self.tmp.values():
                tmp.unlink(missing_ok=True)

    def reject(
        self,
        source: str,
        level: str,
        kind: str,
        reason: str,
        record: str,
        pid: Any = None,
        track_index: int | None = None,
    ) -> None:
        # Built by hand (it is the hot path for the many duplicate tracks); the same text as
        # json.dumps of the dict {source, pid, track_index, level, kind, reason, record}.
        line = (
            f'{{"source": {_json_str(source)}, '
            f'"pid": {pid if type(pid) is int else "null"}, '
            f'"track_index": {"null" if track_index is None else track_index}, '
            f'"level": "{level}", "kind": "{kind}", '
            f'"reason": {_json_str(reason)}, "record": {_json_str(record)}}}\n'
        )
        self.quarantine.write(line)  # type: ignore[union-attr]
        self.reasons[kind] += 1
        self.report.quarantine_records += 1

    # -- validation

    def _text_defect(self, value: Any, what: str, required: bool) -> tuple[str, str] | None:
        if value is None:
            if required:
                return "missing_field", f"missing required field {what}, expected a string"
            return None
        if not isinstance(value, str):
            return "wrong_type", f"{what} is {_type_name(value)}, expected a string"
        if required and not value.strip():
            return "missing_field", f"required field {what} is empty, expected a non-empty string"
        if not _utf8_ok(value):
            return "bad_text", f"{what} {value!r:.60} is not valid Unicode (lone surrogate)"
        if len(value) > self.limits.max_text_length:
            return (
                "text_too_long",
                f"{what} has {len(value)} characters, expected at most "
                f"{self.limits.max_text_length}",
            )
        return None

    @staticmethod
    def _int_defect(value: Any, what: str) -> tuple[str, str] | None:
        if value is None:
            return None
        if type(value) is not int:
            return "wrong_type", f"{what} is {_type_name(value)} {value!r:.40}, expected an int"
        if value < 0:
            return "negative_value", f"{what} is {value}, expected >= 0"
        return None

    def _playlist_defect(self, pl: dict[str, Any]) -> tuple[str, str] | None:
        pid = pl.get("pid")
        if pid is None:
            return "missing_field", "missing required field 'pid', expected an int"
        defect = self._int_defect(pid, "'pid'")
        if defect:
            return defect
        defect = self._text_defect(pl.get("name"), "'name'", required=True)
        if defect:
            return defect
        tracks = pl.get("tracks")
        if tracks is None:
            return "missing_field", "missing required field 'tracks', expected an array"
        if not isinstance(tracks, list):
            return "wrong_type", f"'tracks' is {_type_name(tracks)}, expected an array"
        if not tracks:
            return "empty_playlist", "'tracks' is empty, expected at least one track"
        if len(tracks) > self.limits.max_tracks_per_playlist:
            return (
                "too_many_tracks",
                f"'tracks' has {len(tracks)} entries, expected at most "
                f"{self.limits.max_tracks_per_playlist}",
            )
        for name in _PLAYLIST_INT_FIELDS:
            defect = self._int_defect(pl.get(name), f"'{name}'")
            if defect:
                return defect
        collab = pl.get("collaborative")
        if collab is not None and not isinstance(collab, bool) and collab not in ("true", "false"):
            return (
                "wrong_type",
                f"'collaborative' is {_type_name(collab)} {collab!r:.40}, "
                "expected a bool or 'true'/'false'",
            )
        defect = self._text_defect(pl.get("description"), "'description'", required=False)
        if defect:
            return defect
        if pid in self.seen_pids:
            return "duplicate_pid", f"pid {pid} was already ingested, the first playlist wins"
        return None

    def _track_ok(self, t: Any) -> bool:
        """Fast check of the common, valid case; :meth:`_track_defect` explains failures."""
        if type(t) is not dict:
            return False
        max_len = self.limits.max_text_length
        uri = t.get("track_uri")
        name = t.get("track_name")
        artist = t.get("artist_name")
        if not (
            type(uri) is str
            and type(name) is str
            and type(artist) is str
            and len(uri) <= max_len
            and len(name) <= max_len
            and len(artist) <= max_len
            and name.strip()
            and artist.strip()
            and (name.isascii() or _utf8_ok(name))
            and (artist.isascii() or _utf8_ok(artist))
            and (uri in self.seen_tracks or _TRACK_URI_RE.fullmatch(uri))
        ):
            return False
        if len(t) > 3:
            for key in _TRACK_OPTIONAL_STR:
                value = t.get(key)
                if value is not None and (
                    type(value) is not str
                    or len(value) > max_len
                    or not (value.isascii() or _utf8_ok(value))
                ):
                    return False
            for key in _TRACK_OPTIONAL_INT:
                value = t.get(key)
                if value is not None and (type(value) is not int or value < 0):
                    return False
        return True

    def _track_defect(self, t: Any) -> tuple[str, str] | None:
        """Return ``(kind, message)`` for an invalid track entry, ``None`` for a valid one."""
        if self._track_ok(t):
            return None
        if not isinstance(t, dict):
            return "wrong_type", f"track is {_type_name(t)}, expected an object"
        for name in _TRACK_REQUIRED:
            defect = self._text_defect(t.get(name), f"'{name}'", required=True)
            if defect:
                return defect
        uri = t["track_uri"]
        if not _TRACK_URI_RE.fullmatch(uri):
            return (
                "bad_track_uri",
                f"'track_uri' {uri!r:.80} does not match {TRACK_URI_PATTERN}",
            )
        for name in _TRACK_OPTIONAL_STR:
            defect = self._text_defect(t.get(name), f"'{name}'", required=False)
            if defect:
                return defect
        for name in _TRACK_OPTIONAL_INT:
            defect = self._int_defect(t.get(name), f"'{name}'")
            if defect:
                return defect
        return None  # pragma: no cover - _track_ok and the checks above agree

    # -- processing

    def process_playlist(self, pl: Any, index: int, source: str, base: str) -> bool:
        """Validate one playlist entry and buffer its rows; return True when it was kept."""
        report = self.report
        report.playlists_in += 1
        where = f"{base} playlists[{index}]"
        if not isinstance(pl, dict):
            report.playlists_quarantined += 1
            self.reject(
                source,
                "playlist",
                "wrong_type",
                f"{where}: playlist is {_type_name(pl)}, expected an object",
                _snippet(pl),
            )
            return False
        pid = pl.get("pid")
        tracks = pl.get("tracks")
        n_tracks = len(tracks) if isinstance(tracks, list) else 0
        report.tracks_in += n_tracks
        defect = self._playlist_defect(pl)
        if defect:
            report.playlists_quarantined += 1
            report.tracks_dropped_with_playlist += n_tracks
            kind, msg = defect
            self.reject(
                source, "playlist", kind, f"{where} (pid {pid!r:.40}): {msg}", _snippet(pl), pid
            )
            return False

        # Pass 1: validate each track; keep (order key, list index, track).
        entries = []
        needs_sort = False
        track_ok = self._track_ok
        for idx, t in enumerate(tracks):
            if not track_ok(t):
                kind, msg = self._track_defect(t) or ("wrong_type", "invalid track")
                report.tracks_quarantined += 1
                self.reject(
                    source,
                    "track",
                    kind,
                    f"{where} (pid {pid}) track {idx}: {msg}",
                    _snippet(t),
                    pid,
                    idx,
                )
                continue
            pos = t.get("pos")
            if pos is None or pos == idx:
                entries.append((idx, idx, t))
            else:
                needs_sort = True
                entries.append((pos, idx, t))
        if needs_sort:
            entries.sort(key=lambda e: (e[0], e[1]))

        # Pass 2, in position order: drop repeated URIs, buffer interaction and new track rows.
        # Rows are only buffered when at least one track is kept, and then the playlist is kept.
        first_index: dict[str, int] = {}
        seen_tracks = self.seen_tracks
        irow = self.buffers["interactions"]
        trow = self.buffers["tracks"]
        i_pid, i_pos, i_uri = irow["pid"], irow["pos"], irow["track_uri"]
        n_kept = 0
        for _, idx, t in entries:
            uri = t["track_uri"]
            first = first_index.get(uri)
            if first is not None:
                report.tracks_quarantined += 1
                report.duplicate_tracks_dropped += 1
                self.reject(
                    source,
                    "track",
                    "duplicate_track",
                    f"{where} (pid {pid}) track {idx}: track_uri {uri} repeats track {first}, "
                    "expected each track once per playlist (first occurrence kept)",
                    _snippet(t),
                    pid,
                    idx,
                )
                continue
            first_index[uri] = idx
            i_pid.append(pid)
            i_pos.append(n_kept)
            i_uri.append(uri)
            n_kept += 1
            if uri not in seen_tracks:
                seen_tracks.add(uri)
                trow["track_uri"].append(uri)
                trow["track_name"].append(t["track_name"])
                trow["artist_name"].append(t["artist_name"])
                trow["album_name"].append(t.get("album_name"))
                trow["artist_uri"].append(t.get("artist_uri"))
                trow["album_uri"].append(t.get("album_uri"))
                trow["duration_ms"].append(t.get("duration_ms"))

        if not n_kept:
            report.playlists_quarantined += 1
            self.reject(
                source,
                "playlist",
                "empty_playlist",
                f"{where} (pid {pid}): no valid track left ({n_tracks} quarantined), "
                "expected at least one",
                _snippet(pl),
                pid,
            )
            return False

        self.seen_pids.add(pid)
        report.playlists_ok += 1
        report.interactions_ok += n_kept
        collab = pl.get("collaborative")
        if isinstance(collab, str):
            collab = collab == "true"
        prow = self.buffers["playlists"]
        prow["pid"].append(pid)
        prow["name"].append(pl["name"])
        prow["description"].append(pl.get("description"))
        prow["num_tracks"].append(n_kept)
        prow["num_followers"].append(pl.get("num_followers"))
        prow["num_edits"].append(pl.get("num_edits"))
        prow["modified_at"].append(pl.get("modified_at"))
        prow["collaborative"].append(collab)
        prow["duration_ms"].append(pl.get("duration_ms"))
        prow["source"].append(base)
        return True

    def process_file(self, source: str, data: bytes, max_playlists: int | None) -> bool:
        """Ingest one slice; return False when ``max_playlists`` was reached."""
        base = source.rstrip("/").rsplit("/", 1)[-1]
        self.report.files_read += 1
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self.report.files_quarantined += 1
            self.reject(
                source,
                "file",
                "not_json",
                f"{base}: not UTF-8 text (byte {exc.start}: {exc.reason}), expected a JSON file",
                data[:_RECORD_CHARS].decode("utf-8", errors="replace"),
            )
            return True
        del data
        playlists, defect = _load_slice(text, base)
        del text
        if defect:
            self.report.files_quarantined += 1
            self.reject(source, "file", defect.kind, defect.reason, defect.record)
            logger.warning("quarantined part of %s: %s", source, defect.reason)
        for index, pl in enumerate(playlists):
            if max_playlists is not None and self.report.playlists_ok >= max_playlists:
                return False
            self.process_playlist(pl, index, source, base)
        self.maybe_flush()
        return max_playlists is None or self.report.playlists_ok < max_playlists


def feedback_batches(feedback: Path | str) -> list[Path]:
    """The batch folders of exported feedback, oldest first.

    Args:
        feedback: A folder ``llarapp feedback export --out`` wrote (its ``feedback-A-B/``
            batches) or one batch folder (it holds ``batch.json``). Local paths only.

    Raises:
        NoSourceFilesError: If ``feedback`` is no such folder or holds no batch.
    """
    folder = Path(feedback)
    if (folder / "batch.json").is_file():
        return [folder]
    batches = sorted(b for b in folder.glob("feedback-*") if (b / "batch.json").is_file())
    if not folder.is_dir() or not batches:
        raise NoSourceFilesError(
            f"feedback {str(feedback)!r}: expected a folder `llarapp feedback export --out` "
            "wrote (feedback-*/batch.json inside) or one batch folder"
        )
    return batches


def _write_negatives(batches: list[Path], out: Path) -> int:
    """Concatenate the batches' negatives into ``out/negatives.parquet``; returns its rows."""
    tables = [pq.read_table(b / schema.NEGATIVES_FILE, schema=schema.NEGATIVES) for b in batches]
    table = pa.concat_tables(tables)
    tmp = out / f"{schema.NEGATIVES_FILE}.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    os.replace(tmp, out / schema.NEGATIVES_FILE)
    return table.num_rows


def read_source(name: str, client: Any = None) -> bytes:
    """The bytes of one file :func:`iter_sources` listed (a path or an ``s3://`` URI;
    ``client``: an S3 client to reuse, else one from the environment)."""
    if name.startswith("s3://"):
        from llarapp.data import storage

        return storage.read_bytes(name, client)
    return Path(name).read_bytes()


def ingest(
    source: str,
    out_dir: Path | str,
    *,
    limits: IngestLimits | None = None,
    max_playlists: int | None = None,
    feedback: Path | str | None = None,
) -> IngestReport:
    """Validate MPD slices and write the playlist, track and interaction tables.

    Args:
        source: A folder, glob, file or ``s3://bucket/prefix`` (see :func:`iter_sources`).
        out_dir: Output folder (created if needed); see the module docstring for its files.
        limits: Size limits; defaults to :class:`IngestLimits`.
        max_playlists: Stop after this many valid playlists (for quick runs; the feedback's
            playlists come on top and are always kept).
        feedback: Exported feedback (:func:`feedback_batches`): its fresh playlists are
            ingested with the data and its negatives written to ``negatives.parquet``.

    Returns:
        The report, also written to ``out_dir/ingest_report.json``.

    Raises:
        NoSourceFilesError: If ``source`` matches no files.
        ValueError: If ``max_playlists`` is not positive.
        OSError: If a file cannot be read; no output looks complete in that case.
    """
    started = time.perf_counter()
    limits = limits or IngestLimits()
    if max_playlists is not None and max_playlists < 1:
        raise ValueError(f"max_playlists must be >= 1, got {max_playlists}")
    batches = feedback_batches(feedback) if feedback is not None else []
    fresh = [
        str(b / s)
        for b in batches
        for s in _sort_slices(p.name for p in b.glob("mpd.slice.*.json"))
    ]
    files = fresh + iter_sources(source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / schema.INGEST_REPORT_FILE
    report_path.unlink(missing_ok=True)  # the report marks a complete ingest
    (out / schema.NEGATIVES_FILE).unlink(missing_ok=True)  # only this run's feedback
    client = None
    if str(source).startswith("s3://"):
        from llarapp.data import storage

        client = storage.s3_client()

    report = IngestReport(source=str(source), out_dir=str(out), limits=asdict(limits))
    state = _Ingestor(out, limits, report)
    logger.info("ingesting %d files from %s into %s", len(files), source, out)
    ok = False
    try:
        state.open()
        progress = tqdm(files, desc="ingest", unit="file", mininterval=1.0)
        for i, name in enumerate(progress):
            if i == len(fresh) and max_playlists is not None:
                max_playlists += report.playlists_ok  # the data's cap; feedback comes on top
            limit = None if i < len(fresh) else max_playlists
            if not state.process_file(name, read_source(name, client), limit):
                report.stopped_early = True
                logger.info("stopping after %d playlists (max_playlists)", report.playlists_ok)
                break
            progress.set_postfix(playlists=report.playlists_ok, refresh=False)
        progress.close()
        ok = True
    finally:
        state.close(ok)

    report.feedback_batches = len(batches)
    if batches:
        report.negatives = _write_negatives(batches, out)
    report.distinct_tracks = len(state.seen_tracks)
    report.reasons = dict(state.reasons)
    report.seconds = round(time.perf_counter() - started, 3)
    report.peak_rss_mb = peak_rss_mb()
    tmp_report = report_path.with_name(report_path.name + f".tmp-{os.getpid()}")
    tmp_report.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_report, report_path)
    logger.info(
        "ingest done: %d playlists ok, %d quarantined, %d interactions, %d distinct tracks, "
        "%d quarantine records in %.1fs (peak RSS %.0f MiB)",
        report.playlists_ok,
        report.playlists_quarantined,
        report.interactions_ok,
        report.distinct_tracks,
        report.quarantine_records,
        report.seconds,
        report.peak_rss_mb,
    )
    return report
