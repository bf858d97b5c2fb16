"""Table contracts shared by every stage.

Ingest writes three parquet files into its output folder; every later stage reads them:

- ``playlists.parquet``: one row per valid playlist (:data:`PLAYLISTS`).
- ``tracks.parquet``: one row per distinct ``track_uri`` (:data:`TRACKS`); the first
  spelling of a track's text that ingest met wins.
- ``interactions.parquet``: one row per (playlist, position) (:data:`INTERACTIONS`); ``pos``
  is 0-based and contiguous after invalid and duplicate tracks were dropped.

With exported feedback (``ingest(..., feedback=...)``) it also writes ``negatives.parquet``
(:data:`NEGATIVES`): one row per disliked (playlist context, track), the ranker's hard
negatives (``llarapp feedback export`` writes the same table per batch).
"""

import pyarrow as pa

PLAYLISTS = pa.schema(
    [
        ("pid", pa.int64()),
        ("name", pa.string()),
        ("description", pa.string()),  # null when the slice has none
        ("num_tracks", pa.int64()),  # tracks kept after validation
        ("num_followers", pa.int64()),
        ("num_edits", pa.int64()),
        ("modified_at", pa.int64()),
        ("collaborative", pa.bool_()),
        ("duration_ms", pa.int64()),
        ("source", pa.string()),  # slice file (or s3 object) the playlist came from
    ]
)

TRACKS = pa.schema(
    [
        ("track_uri", pa.string()),
        ("track_name", pa.string()),
        ("artist_name", pa.string()),
        ("album_name", pa.string()),  # null in reduced slices (mpd-dev)
        ("artist_uri", pa.string()),
        ("album_uri", pa.string()),
        ("duration_ms", pa.int64()),
    ]
)

NEGATIVES = pa.schema(
    [
        ("feedback_id", pa.int64()),
        ("ts", pa.float64()),
        ("pid", pa.int64()),  # the context's fresh playlist (its likes); null when none
        ("playlist_id", pa.string()),
        ("request_id", pa.string()),
        ("title", pa.string()),
        ("seed_uris", pa.list_(pa.string())),
        ("track_uri", pa.string()),  # the disliked track
        ("model_version", pa.string()),
    ]
)

INTERACTIONS = pa.schema(
    [
        ("pid", pa.int64()),
        ("pos", pa.int32()),
        ("track_uri", pa.string()),
    ]
)

PLAYLISTS_FILE = "playlists.parquet"
TRACKS_FILE = "tracks.parquet"
INTERACTIONS_FILE = "interactions.parquet"
QUARANTINE_FILE = "quarantine.jsonl"
INGEST_REPORT_FILE = "ingest_report.json"
NEGATIVES_FILE = "negatives.parquet"

#: Fresh playlists (a feedback context's likes, ``llarapp feedback export``) have pids from
#: here on: above any MPD pid (MPD's are below 10**6), unique across exports.
FEEDBACK_PID_BASE = 10**12
