"""``llarapp benchmark drift``: false alarms and detection of the drift check, per drift kind.

``llarapp benchmark drift --mpd DIR --out FILE.json`` measures the decision the continuous
pipeline runs (:func:`llarapp.monitoring.check_drift` with :class:`DriftConfig`'s defaults):

1. ingests ``--mpd`` and splits it with 30 % validation and 30 % test playlists (more held-out
   requests than the quality split's, so that windows of 500 requests are not mostly repeats);
   the catalogue is the training playlists' tracks, a track's popularity the number of training
   playlists that hold it;
2. the reference window is every validation case as a ``/v1/recommend`` body (the shape
   ``llarapp benchmark api`` sends: RecSys Challenge categories, from title only to 100 seeds);
3. undrifted windows draw test cases at random (without replacement within a window; with
   replacement only when the window is larger than the pool): the false-alarm rate is the share
   of them the check calls drifted;
4. drifted windows are drawn the same way and then changed by one drift kind; the detection
   rate is the share called drifted:

   - ``scene``: half of the window comes from one scene. Real MPD has no genre labels, so a
     scene is a cluster of playlists by the artists they hold (TF-IDF over each playlist's
     artists, 32 SVD components fitted on the training playlists, k-means with 8 clusters);
     each window picks one cluster with at least 20 test cases. Titles are not used to find
     the scenes, so the check (which sees titles, not artists) is not told the answer. On
     synthetic data the clusters follow the generator's genres.
   - ``new_releases``: half of the requests with seeds have half their seeds (at least one)
     replaced by tracks the catalogue does not know (new URIs, new names).
   - ``language``: 30 % of the titled requests carry a title in another language (Spanish,
     Portuguese, German, French, Italian: :data:`FOREIGN_TITLES`, written for this benchmark).
   - ``seeds_per_request``: clients send at most 5 seeds (requests with more are cut to their
     first 5).

JSON written to ``out``::

    {"windows": K, "window_sizes": [...], "default_window": SIZE,
     "false_alarm": {SIZE: x}, "detection": {KIND: {SIZE: x}},
     "columns": {"none" | KIND: {SIZE: {COLUMN: share of windows where it fired}}},
     "dataset": {...}, "seconds": {STAGE: s}}
"""

from __future__ import annotations

import json
import logging
import string
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from llarapp.benchmark.timing import timed
from llarapp.config import SplitConfig
from llarapp.data.dataset import EvalCase, load_cases, load_train
from llarapp.data.ingest import ingest
from llarapp.data.schema import INTERACTIONS_FILE, TRACKS_FILE
from llarapp.data.split import FOLDS_FILE, split
from llarapp.monitoring import DEFAULT_WINDOW, Catalogue, DriftConfig, Reference, check_drift
from llarapp.monitoring.window import window_from_bodies
from llarapp.serving.request import request_body
from llarapp.text import TextEncoder, default_cache_dir

log = logging.getLogger(__name__)

KINDS = ("scene", "new_releases", "language", "seeds_per_request")
WINDOW_SIZES = (100, 200, 500)
K = 40  # windows per drift kind and window size
N_SCENES = 8
MIN_SCENE_CASES = 20
SCENE_SHARE = 0.5  # share of a scene-shift window drawn from one scene
NEW_RELEASE_REQUESTS = 0.5  # share of requests with seeds that get new releases
NEW_RELEASE_SEEDS = 0.5  # share of such a request's seeds replaced (at least one)
LANGUAGE_SHARE = 0.3  # share of titled requests whose title is in another language
MAX_SEEDS = 5  # seeds per request after the change
REQUEST_K = 50

#: Playlist titles in other languages: written for this benchmark, not taken from any data.
FOREIGN_TITLES = (
    "canciones para el verano", "música para dormir", "fiesta en la playa", "para el coche",
    "mis canciones favoritas", "música triste", "para bailar toda la noche", "desamor",
    "viaje por carretera", "clásicos en español", "música para estudiar", "domingo tranquilo",
    "músicas para relaxar", "sertanejo universitário", "festa junina", "saudade",
    "treino pesado", "músicas antigas", "Lieblingslieder", "Musik zum Einschlafen",
    "Autofahrt mit Freunden", "Sommerhits zum Mitsingen", "ruhige Abende", "deutscher Rap",
    "Feierabend", "chansons pour la route", "musique douce du soir", "soirée entre amis",
    "mes chansons préférées", "pour se détendre", "canzoni d'amore", "estate al mare",
    "musica per correre", "viaggio in macchina", "serata tranquilla", "le più belle canzoni",
)  # fmt: skip


def scenes(data_dir: Path, split_dir: Path, seed: int) -> dict[int, int]:
    """``pid -> scene`` for every valid/test playlist: k-means on the playlists' artists.

    TF-IDF over each playlist's artist names, :data:`N_SCENES` clusters of 32 SVD components,
    both fitted on the training playlists only.
    """
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    folds = pq.read_table(split_dir / FOLDS_FILE).to_pandas()
    inter = pq.read_table(data_dir / INTERACTIONS_FILE, columns=["pid", "track_uri"]).to_pandas()
    artists = pq.read_table(data_dir / TRACKS_FILE, columns=["track_uri", "artist_name"])
    artist_of = dict(zip(*(artists.column(c).to_pylist() for c in artists.column_names),
                         strict=True))  # fmt: skip
    inter["artist"] = inter["track_uri"].map(artist_of)
    docs = inter.groupby("pid")["artist"].apply(list)
    fold_of = folds.set_index("pid")["fold"]
    train = docs[fold_of.reindex(docs.index).to_numpy() == "train"]
    held = docs[np.isin(fold_of.reindex(docs.index).to_numpy(), ["valid", "test"])]
    tfidf = TfidfVectorizer(analyzer=lambda artists: artists, min_df=2)
    svd = TruncatedSVD(32, random_state=seed)
    kmeans = KMeans(N_SCENES, n_init=4, random_state=seed)
    kmeans.fit(normalize(svd.fit_transform(tfidf.fit_transform(train))))
    labels = kmeans.predict(normalize(svd.transform(tfidf.transform(held))))
    return dict(zip(held.index.tolist(), labels.tolist(), strict=True))


def _new_uri(rng: np.random.Generator) -> str:
    chars = np.array(list(string.ascii_letters + string.digits))
    return "spotify:track:" + "".join(rng.choice(chars, 22))


def new_releases(bodies: list[dict], rng: np.random.Generator) -> list[dict]:
    """A wave of new releases: seeds the catalogue does not know (see the module docstring)."""
    out = []
    for body in bodies:
        tracks = list(body["tracks"])
        if tracks and rng.random() < NEW_RELEASE_REQUESTS:
            n = max(1, round(NEW_RELEASE_SEEDS * len(tracks)))
            for i in rng.choice(len(tracks), n, replace=False):
                j = int(rng.integers(1_000_000))
                tracks[i] = {"track_name": f"new song {j}", "artist_name": f"new artist {j}",
                             "track_uri": _new_uri(rng)}  # fmt: skip
        out.append({**body, "tracks": tracks})
    return out


def language(bodies: list[dict], rng: np.random.Generator) -> list[dict]:
    """Titles in another language for :data:`LANGUAGE_SHARE` of the titled requests."""
    return [
        {**b, "name": str(rng.choice(FOREIGN_TITLES))}
        if b.get("name") and rng.random() < LANGUAGE_SHARE
        else b
        for b in bodies
    ]


def fewer_seeds(bodies: list[dict], rng: np.random.Generator) -> list[dict]:
    """Clients send at most :data:`MAX_SEEDS` seeds (the first ones); ``rng`` unused (every
    change takes one)."""
    return [{**b, "tracks": b["tracks"][:MAX_SEEDS]} for b in bodies]


def _draw(pool: Sequence, size: int, rng: np.random.Generator) -> list:
    idx = rng.choice(len(pool), size, replace=size > len(pool))
    return [pool[i] for i in idx]


def run_drift_benchmark(
    mpd: str,
    out: Path | str,
    *,
    windows: int = K,
    window_sizes: Sequence[int] = WINDOW_SIZES,
    default_window: int = DEFAULT_WINDOW,
    seed: int = 0,
    max_playlists: int | None = None,
    work_dir: Path | str | None = None,
    config: DriftConfig | None = None,
) -> dict:
    """Measure false alarms and detection of :func:`check_drift`; write JSON to ``out``.

    Args:
        mpd: MPD slices (folder, glob or s3:// URI).
        out: Where the JSON goes.
        windows: Windows per drift kind (and undrifted) and window size.
        window_sizes: Requests per window.
        default_window: The size the continuous pipeline checks (must be in ``window_sizes``).
        seed: Split, scene and window seed.
        max_playlists: Ingest at most this many playlists (all when None).
        work_dir: Keep ``data/`` and ``split/`` here (a temporary folder when None).
        config: The decision's methods and thresholds (the defaults when None).

    Raises:
        ValueError: ``default_window`` is not one of ``window_sizes``, or too few cases.
    """
    if default_window not in window_sizes:
        raise ValueError(f"default_window={default_window}: expected one of {list(window_sizes)}")
    config = config or DriftConfig()
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="llarapp-drift-") as tmp:
        work = Path(work_dir or tmp)
        with timed(seconds, "ingest + split"):
            report = ingest(mpd, work / "data", max_playlists=max_playlists)
            split(work / "data", work / "split", SplitConfig(seed, valid_frac=0.3, test_frac=0.3))
        with timed(seconds, "catalogue + scenes"):
            train = load_train(work / "data", work / "split")
            counts = np.asarray(train.matrix.sum(axis=0)).ravel()
            catalogue = Catalogue(dict(zip(train.track_uris.tolist(), counts.tolist(),
                                           strict=True)))  # fmt: skip
            reference_cases = load_cases(work / "data", work / "split", "valid")
            pool = load_cases(work / "data", work / "split", "test")
            scene_of = scenes(work / "data", work / "split", seed)
        by_scene: dict[int, list[EvalCase]] = {}
        for ec in pool:
            by_scene.setdefault(scene_of[ec.case.pid], []).append(ec)
        big = sorted(s for s, cases in by_scene.items() if len(cases) >= MIN_SCENE_CASES)
        if len(reference_cases) < 50 or len(pool) < 50 or not big:
            raise ValueError(
                f"{mpd}: {len(reference_cases)} reference and {len(pool)} test cases, "
                f"{len(big)} scenes of >= {MIN_SCENE_CASES}; expected >= 50, >= 50 and >= 1 "
                "(give more playlists)"
            )
        encoder = TextEncoder(default_cache_dir())
        encode = encoder.encode
        with timed(seconds, "reference"):
            encode(sorted({ec.case.title for ec in (*reference_cases, *pool) if ec.case.title}))
            encode(list(FOREIGN_TITLES))
            encoder.flush()
            reference = window_from_bodies(
                [request_body(ec.case, REQUEST_K) for ec in reference_cases], catalogue, encode
            )
            clustered = Reference.of(reference, config)
        rng = np.random.default_rng([seed, 17])

        def scene_window(size: int) -> list[EvalCase]:
            scene = by_scene[big[rng.integers(len(big))]]
            n_scene = round(SCENE_SHARE * size)
            return _draw(scene, n_scene, rng) + _draw(pool, size - n_scene, rng)

        changes: dict[str, Callable[[list[dict], np.random.Generator], list[dict]]] = {
            "new_releases": new_releases,
            "language": language,
            "seeds_per_request": fewer_seeds,
        }
        rates: dict[str, dict[int, float]] = {}
        fired: dict[str, dict[int, dict[str, float]]] = {}
        with timed(seconds, "windows"):
            for kind in ("none", *KINDS):
                rates[kind], fired[kind] = {}, {}
                for size in window_sizes:
                    verdicts = []
                    for _ in range(windows):
                        cases = scene_window(size) if kind == "scene" else _draw(pool, size, rng)
                        bodies = [request_body(ec.case, REQUEST_K) for ec in cases]
                        if kind in changes:
                            bodies = changes[kind](bodies, rng)
                        current = window_from_bodies(bodies, catalogue, encode)
                        verdicts.append(check_drift(clustered, current, config))
                    rates[kind][size] = round(float(np.mean([v.drifted for v in verdicts])), 4)
                    fired[kind][size] = {
                        c.column: round(float(np.mean([v.columns[i].drifted for v in verdicts])), 4)
                        for i, c in enumerate(verdicts[0].columns)
                    }
                    log.info("drift %s at %d: %.3f", kind, size, rates[kind][size])
    result = {
        "windows": windows,
        "window_sizes": list(window_sizes),
        "default_window": default_window,
        "false_alarm": rates.pop("none"),
        "detection": rates,
        "columns": fired,
        "dataset": {
            "source": str(mpd),
            "seed": seed,
            "playlists": report.to_dict()["playlists_ok"],
            "catalogue_tracks": len(catalogue.popularity),
            "reference_requests": len(reference),
            "test_requests": len(pool),
            "scenes_used": len(big),
        },
        "seconds": seconds,
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    return result


def format_table(result: dict) -> str:
    """The false-alarm and detection rates, one row per drift kind, one column per size."""
    sizes = result["window_sizes"]
    head = f"{'windows of':<20}" + "".join(f"{s:>8}" for s in sizes)
    rows = [f"{'false alarm':<20}" + "".join(f"{result['false_alarm'][s]:>8.3f}" for s in sizes)]
    for kind, by_size in result["detection"].items():
        rows.append(f"{'detect ' + kind:<20}" + "".join(f"{by_size[s]:>8.3f}" for s in sizes))
    note = f"{result['windows']} windows each; default window {result['default_window']}"
    return "\n".join([head, *rows, note])
