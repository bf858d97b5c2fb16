"""New releases: tracks nobody has played yet, added to a saved LLaRA++ model's catalogue
without retraining (``llarapp catalog add --model DIR --tracks FILE``).

File in (``FILE``): JSON lines, one object a track::

    {"track_name": "...", "artist_name": "...", "album_name": "...", "track_uri": "..."}

``track_name`` and ``artist_name`` are required non-empty strings; ``album_name`` and
``track_uri`` optional non-empty strings; no other key. Blank lines are skipped. A track
without a URI gets a deterministic one, ``llarapp:track:`` + the first 22 hex digits of the
SHA-1 of its case-folded track, artist and album names (:func:`generated_uri`). Any bad line
refuses the whole file, every bad line listed with its number (:class:`TracksFileError`).

What each new track gets, computed as training computes a cold track's
(:func:`llarapp.training.stage.build_stage`):

- ``text``: its MiniLM vector (``Track.text``: "NAME by ARTIST from ALBUM"), float16;
- ``behavior``: the mean ALS vector of its artist's warm tracks (artists compared by
  :func:`artist_key`) when the artist has any, else the track projector of its text (always
  the projector for a ``text-only`` model, whose every vector is projected);
- ``artist_codes``: its artist's code, or a new code appended to ``artist_names``;
- ``popularity`` 0 (cold).

Files rewritten in ``MODEL_DIR`` (each to a temporary file in the folder, then renamed, names
first: a failure leaves the model as it was, and a names table ahead of its arrays only holds
rows the catalogue ignores): ``arrays.npz`` (the per-track arrays grow at the end, after every
warm and cold track, so ``n_warm``, every existing index and every existing row stay as they
were; ``n_trained`` records the catalogue size at training, once) and ``track_names.parquet``
(new rows appended), then the behavior index where the model has one (``ann/behavior.npz``:
each new row joins the list nearest it). The ALS model, projector, ranker and ONNX export do
not depend on the catalogue and are untouched; a server loads the new catalogue when it
restarts (or when a deploy points it at the folder again).

Tracks whose URI is already in the catalogue, and tracks without a URI named like a catalogue
track (same track and artist, :func:`llarapp.data.names.name_key`), are skipped and reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from llarapp.data.dataset import Track
from llarapp.data.names import TRACK_NAMES_FILE, name_key
from llarapp.models.ann import ANN_DIR, AnnIndex
from llarapp.models.base import ARRAYS_FILE, MODEL_FILE
from llarapp.models.llarapp.stage import artist_key
from llarapp.models.npz import replace_file

log = logging.getLogger(__name__)

#: the keys of a track line: name -> required
TRACK_KEYS = {"track_name": True, "artist_name": True, "album_name": False, "track_uri": False}
GENERATED_PREFIX = "llarapp:track:"
#: arrays.npz keys with one row per catalogue track (grown at the end)
PER_TRACK = ("track_uris", "popularity", "text", "behavior", "artist_codes")
_MAX_LISTED = 50  # bad lines listed in one error message


@dataclass(frozen=True)
class NewTrack:
    """One track to add."""

    track_name: str
    artist_name: str
    track_uri: str  # given, or generated_uri()
    album_name: str | None = None
    line: int | None = None  # its line in the tracks file (reports)
    generated: bool = False  # track_uri was generated

    @property
    def text(self) -> str:
        """What the encoder embeds, as for every catalogue track (:attr:`Track.text`)."""
        return Track(self.track_name, self.artist_name, album_name=self.album_name).text


class TracksFileError(ValueError):
    """A tracks file with bad lines: ``problems`` is ``[(line number, what was wrong)]``."""

    def __init__(self, where: str, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        shown = [f"  line {n}: {what}" for n, what in problems[:_MAX_LISTED]]
        if len(problems) > _MAX_LISTED:
            shown.append(f"  ... and {len(problems) - _MAX_LISTED} more bad lines")
        keys = ", ".join(f"{k} ({'required' if r else 'optional'})" for k, r in TRACK_KEYS.items())
        super().__init__(
            f"{where}: {len(problems)} bad line(s), nothing added; expected one JSON object a "
            f"line with string values: {keys}\n" + "\n".join(shown)
        )


def generated_uri(track_name: str, artist_name: str, album_name: str | None = None) -> str:
    """The URI of a track added without one: deterministic in its (case-folded, trimmed)
    names, so adding the same file twice adds it once."""
    key = f"{name_key(track_name, artist_name)}\0{(album_name or '').strip().casefold()}"
    return GENERATED_PREFIX + hashlib.sha1(key.encode()).hexdigest()[:22]


def parse_new_tracks(lines: Iterable[str], where: str = "tracks") -> list[NewTrack]:
    """The tracks of JSON lines (numbered from 1; blank lines skipped).

    Raises:
        TracksFileError: listing every bad line: not JSON, not an object, a required key
            missing, a value that is not a non-empty string, an unknown key, or a URI (given
            or generated) that an earlier line already has.
    """
    tracks: list[NewTrack] = []
    problems: list[tuple[int, str]] = []
    first_line: dict[str, int] = {}
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append((n, f"not JSON ({exc.msg} at column {exc.colno})"))
            continue
        if not isinstance(obj, dict):
            problems.append((n, f"a JSON {type(obj).__name__}, expected an object"))
            continue
        wrong = []
        unknown = sorted(set(obj) - set(TRACK_KEYS))
        if unknown:
            wrong.append(f"unknown key(s) {', '.join(map(repr, unknown))}")
        for key, required in TRACK_KEYS.items():
            value = obj.get(key)
            if key not in obj:
                if required:
                    wrong.append(f"{key!r} missing")
            elif not isinstance(value, str):
                wrong.append(f"{key!r} is {json.dumps(value)[:40]}, expected a string")
            elif not value.strip():
                wrong.append(f"{key!r} is empty")
        if wrong:
            problems.append((n, "; ".join(wrong)))
            continue
        name, artist = obj["track_name"].strip(), obj["artist_name"].strip()
        album = obj["album_name"].strip() if "album_name" in obj else None
        uri = obj["track_uri"].strip() if "track_uri" in obj else None
        track = NewTrack(
            name,
            artist,
            uri or generated_uri(name, artist, album),
            album,
            line=n,
            generated=uri is None,
        )
        if track.track_uri in first_line:
            problems.append(
                (n, f"track_uri {track.track_uri!r} repeats line {first_line[track.track_uri]}")
            )
            continue
        first_line[track.track_uri] = n
        tracks.append(track)
    if problems:
        raise TracksFileError(where, problems)
    return tracks


def read_new_tracks(path: Path | str) -> list[NewTrack]:
    """:func:`parse_new_tracks` of a JSON-lines file (UTF-8)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from exc
    return parse_new_tracks(text.splitlines(), str(path))


def add_tracks(model_dir: Path | str, tracks: Sequence[NewTrack], embed=None) -> dict[str, Any]:
    """Add ``tracks`` to the catalogue of the LLaRA++ model saved in ``model_dir``.

    Args:
        model_dir: a saved ``llara++`` folder (rewritten in place; see the module docstring).
        tracks: the tracks (:func:`read_new_tracks`).
        embed: texts -> (n, 384) float32 MiniLM vectors; default the model's encoder
            (:attr:`LlaraPP.encoder`, the vectors training embedded with).

    Returns:
        ``{"catalogue_before", "catalogue_after", "added", "from_artist", "from_projector",
        "new_artists", "generated_uris", "skipped": [{"line", "track_uri", "reason"}]}``.
    """
    from llarapp.models.llarapp.model import LlaraPP, load_projector

    model_dir = Path(model_dir)
    meta = (
        json.loads((model_dir / MODEL_FILE).read_text())
        if (model_dir / MODEL_FILE).is_file()
        else {}
    )
    if meta.get("name") != LlaraPP.name:
        raise ValueError(
            f"{model_dir}: a {meta.get('name', 'missing')!r} model; catalog add needs a saved "
            f"{LlaraPP.name} folder ({MODEL_FILE}, {ARRAYS_FILE})"
        )
    with np.load(model_dir / ARRAYS_FILE, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    uris = arrays["track_uris"].astype(str)
    n_before, n_warm = len(uris), int(arrays["n_warm"])
    names_path = model_dir / TRACK_NAMES_FILE
    names = pq.read_table(names_path) if names_path.is_file() else None

    index = set(uris.tolist())
    named = set()
    if names is not None:
        in_catalogue = [u in index for u in names["track_uri"].to_pylist()]
        for n, a, keep in zip(
            names["track_name"].to_pylist(),
            names["artist_name"].to_pylist(),
            in_catalogue,
            strict=True,
        ):
            if keep and (n or a):
                named.add(name_key(n or "", a or ""))
    new, skipped = [], []
    for t in tracks:
        if t.track_uri in index:
            skipped.append((t, "already in the catalogue"))
        elif t.generated and name_key(t.track_name, t.artist_name) in named:
            skipped.append((t, "no URI, and a catalogue track has its name and artist"))
        else:
            new.append(t)
    report: dict[str, Any] = {
        "catalogue_before": n_before,
        "catalogue_after": n_before + len(new),
        "added": len(new),
        "from_artist": 0,
        "from_projector": 0,
        "new_artists": 0,
        "generated_uris": sum(t.generated for t in new),
        "skipped": [{"line": t.line, "track_uri": t.track_uri, "reason": r} for t, r in skipped],
    }
    if not new:
        log.info("catalog add: nothing new for %s", model_dir)
        return report

    embed = embed or LlaraPP(meta.get("config")).encoder.encode
    text = np.asarray(embed([t.text for t in new]), np.float32).astype(np.float16)
    behavior = load_projector(model_dir).project(text.astype(np.float32))
    by_artist = np.zeros(len(new), bool)
    fold_in = meta.get("config", {}).get("curriculum") != "text-only"
    grown: dict[str, np.ndarray] = {}
    if "artist_codes" in arrays:
        codes, artists = arrays["artist_codes"], arrays["artist_names"].astype(str)
        lookup = {a: i for i, a in enumerate(artists.tolist())}
        new_names: list[str] = []
        new_codes = np.empty(len(new), np.int64)
        for i, t in enumerate(new):
            key = artist_key(t.artist_name)
            if key not in lookup:
                lookup[key] = len(artists) + len(new_names)
                new_names.append(key)
            new_codes[i] = lookup[key]
        warm_codes = codes[:n_warm]
        if fold_in:  # a text-only model's vectors are all projected: no artist means
            for code in np.unique(new_codes):
                played = np.flatnonzero(warm_codes == code)
                if len(played):
                    at = new_codes == code
                    mean = arrays["behavior"][played].astype(np.float64).mean(axis=0)
                    behavior[at] = mean.astype(behavior.dtype)
                    by_artist |= at
        grown["artist_codes"] = new_codes.astype(codes.dtype)
        arrays["artist_names"] = np.concatenate([artists, np.array(new_names, dtype=str)])
        report["new_artists"] = len(new_names)
    grown |= {
        "track_uris": np.array([t.track_uri for t in new], dtype=str),
        "popularity": np.zeros(len(new), arrays["popularity"].dtype),
        "text": text,
        "behavior": behavior.astype(arrays["behavior"].dtype),
    }
    for key, rows in grown.items():
        arrays[key] = np.concatenate([arrays[key], rows.astype(arrays[key].dtype, copy=False)])
    arrays.setdefault("n_trained", np.array(n_before))  # the catalogue size at training
    report["from_artist"] = int(by_artist.sum())
    report["from_projector"] = len(new) - report["from_artist"]

    added_names = pa.table(
        {
            "track_uri": pa.array([t.track_uri for t in new], pa.string()),
            "track_name": pa.array([t.track_name for t in new], pa.string()),
            "artist_name": pa.array([t.artist_name for t in new], pa.string()),
        }
    )
    if names is not None:
        columns = added_names.column_names
        added_names = pa.concat_tables(
            [names.select(columns).cast(added_names.schema), added_names]
        )
    replace_file(model_dir / TRACK_NAMES_FILE, lambda f: pq.write_table(added_names, f))
    replace_file(model_dir / ARRAYS_FILE, lambda f: np.savez(f, **arrays))
    _extend_index(model_dir, n_before, grown["behavior"])
    log.info(
        "catalog add: %d tracks (%d from their artist, %d projected) -> %s",
        len(new),
        report["from_artist"],
        report["from_projector"],
        model_dir,
    )
    return report


def _extend_index(model_dir: Path, n_before: int, behavior: np.ndarray) -> None:
    """The saved behavior index (``MODEL_DIR/ann/``, models above ``ann_threshold``) with the
    new tracks' rows, so that loading the grown model does not build it again."""
    index = AnnIndex.load(model_dir / ANN_DIR, "behavior", (n_before, behavior.shape[1]))
    if index is not None:
        index.extended(behavior).save(model_dir / ANN_DIR, "behavior")
