"""``llarapp benchmark ann``: exact against indexed retrieval on a large synthetic catalogue.

    llarapp benchmark ann --model runs/model --tracks 1000000 --playlists 300000 --out ann.json

Building MiniLM vectors for a million tracks takes hours on two cores, so the catalogue here
is **synthetic**; everything that runs per request is the real serving path. What is
synthetic, exactly:

- ``behavior`` (tracks x the model's ALS factors): genres (one per 1,000 tracks) hold artists
  (one per 20 tracks) hold tracks, each a Gaussian step from its parent, norms log-normal
  (ALS vectors of popular tracks are longer); warm tracks first (80 %), their popularity
  Zipf-like; the ALS model's item factors are replaced by the warm rows (its fold-in is real);
- ``text`` (tracks x 384, float16) and the titles (playlists x 384): the same hierarchy in an
  independent space, unit length; a playlist's title is near its genre's;
- training playlists: 20-60 tracks of one genre each (the item-kNN and title-kNN votes), their
  ALS vector the mean of their tracks' (the title query);
- requests: a title + 10 seeds (by URI) of one genre, k = 500; the title's vector is looked up,
  not embedded (MiniLM's cost per title does not depend on the catalogue; the server caches it).

The model given supplies the ranker, the track projector and the ALS configuration; each
request runs ``LlaraPP.encode`` -> ``retrieve`` -> ``rank`` (``LlaraPP.recommend``'s steps),
once with the exact sources and once with the indexes, interleaved, one thread. Reported:
p50 / p99 wall and CPU time per request and per step, the indexes' build time and size, and
recall: each dense source's top N, the fused candidates and the final k against the exact run.
"""

from __future__ import annotations

import json
import logging
import resource
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from llarapp.data.dataset import Case, Track
from llarapp.data.names import TrackNames
from llarapp.models.ann import AnnIndex, recall_of
from llarapp.models.base import Recommender
from llarapp.models.llarapp import LlaraPP, Stage
from llarapp.models.llarapp.model import INDEXES, tune_indexes
from llarapp.models.llarapp.stage import Catalog
from llarapp.models.retriever import Retriever

log = logging.getLogger(__name__)

TEXT_DIM = 384
SEEDS = 10
SYNTHETIC = (
    "behavior, text and title vectors (genre > artist > track Gaussian hierarchy), "
    "popularity (Zipf), training playlists (20-60 tracks of one genre), requests (a genre's "
    "title vector, looked up, + 10 warm seeds of that genre); the ranker, projector and ALS "
    "configuration are the model's, the ALS item factors the synthetic warm rows"
)


def _hierarchy(
    rng, n: int, dim: int, genre: np.ndarray, artist: np.ndarray, unit: bool = False
) -> np.ndarray:
    """(n, dim): genre centre + artist step + track step; float32, or with ``unit`` of unit
    length in float16 (as a model saves text vectors)."""
    genres = rng.standard_normal((genre.max() + 1, dim), dtype=np.float32)
    artists = genres[_first(genre, artist)] + 0.6 * rng.standard_normal(
        (artist.max() + 1, dim), dtype=np.float32
    )
    out = np.empty((n, dim), np.float16 if unit else np.float32)
    for s in range(0, n, 131_072):  # a block at a time: bounded temporaries
        e = min(n, s + 131_072)
        block = artists[artist[s:e]] + 0.45 * rng.standard_normal((e - s, dim), np.float32)
        out[s:e] = block / np.linalg.norm(block, axis=1, keepdims=True) if unit else block
    return out


def _first(genre: np.ndarray, artist: np.ndarray) -> np.ndarray:
    """Each artist's genre."""
    out = np.zeros(artist.max() + 1, np.int64)
    out[artist] = genre
    return out


def synthetic_model(base: LlaraPP, n: int, n_playlists: int, seed: int = 0) -> tuple[LlaraPP, dict]:
    """``base``'s ranker, projector and ALS over a synthetic catalogue of ``n`` tracks and
    ``n_playlists`` training playlists (the module docstring), exact (no indexes yet);
    and the request material: ``{"genre_tracks", "genre_offsets", "title_vecs"}``."""
    rng = np.random.default_rng(seed)
    f = base.stage.behavior.shape[1]
    n_warm = int(0.8 * n)
    genre = np.sort(rng.integers(0, max(1, n // 1000), n))  # tracks grouped by genre
    artist = genre * 64 + rng.integers(0, 50, n)  # about 20 tracks an artist
    _, artist = np.unique(artist, return_inverse=True)
    order = rng.permutation(n)  # warm and cold across genres
    genre, artist = genre[order], artist[order]
    behavior = 0.1 * _hierarchy(rng, n, f, genre, artist)
    behavior *= rng.lognormal(0.0, 0.3, (n, 1)).astype(np.float32)
    text = _hierarchy(rng, n, TEXT_DIM, genre, artist, unit=True)
    popularity = np.zeros(n, np.float32)
    popularity[:n_warm] = np.minimum(rng.zipf(1.6, n_warm), 50_000)
    # training playlists: 20-60 warm tracks of one genre
    warm_genre = genre[:n_warm]
    by_genre = np.argsort(warm_genre, kind="stable")
    offsets = np.searchsorted(warm_genre[by_genre], np.arange(genre.max() + 2))
    pl_genre = rng.integers(0, genre.max() + 1, n_playlists)
    sizes = rng.integers(20, 61, n_playlists)
    lo, hi = np.repeat(offsets[pl_genre], sizes), np.repeat(offsets[pl_genre + 1], sizes)
    tracks = by_genre[lo + (rng.random(len(lo)) * np.maximum(hi - lo, 1)).astype(np.int64)]
    cols = np.repeat(np.arange(n_playlists), sizes)
    item_playlists = sp.csr_matrix(
        (np.ones(len(tracks), np.float32), (tracks, cols)), shape=(n_warm, n_playlists)
    )
    item_playlists.data[:] = 1.0  # a track twice in a playlist counts once
    counts = np.maximum(np.diff(item_playlists.tocsc().indptr), 1)[:, None]
    playlist_vectors = (item_playlists.T @ behavior[:n_warm] / counts).astype(np.float32)
    genre_titles = rng.standard_normal((genre.max() + 1, TEXT_DIM), dtype=np.float32)
    titles = genre_titles[pl_genre] + 0.8 * rng.standard_normal(
        (n_playlists, TEXT_DIM), dtype=np.float32
    )
    titles /= np.linalg.norm(titles, axis=1, keepdims=True)
    retriever = Retriever(
        behavior,
        popularity == 0,
        popularity,
        item_playlists,
        base.stage.retriever.knn_alpha,
        base.stage.retriever.n_candidates,
        title_vectors=titles,
        playlist_vectors=playlist_vectors,
        artist_codes=artist,
    )
    als = base.stage.als
    als._model.item_factors, als._model._YtY = behavior[:n_warm], None
    uris = np.array([f"spotify:track:synth{i:017d}" for i in range(n)])
    stage = Stage(
        catalog=Catalog(uris, text),
        n_warm=n_warm,
        als=als,
        behavior=behavior,
        popularity=popularity,
        track_projector=base.stage.track_projector,
        retriever=retriever,
        report={},
        artist_names=np.array([f"artist {a}" for a in range(artist.max() + 1)]),
    )
    model = LlaraPP(base.config)
    empty = np.full(n, "", dtype=object)
    model.attach(stage, base.ranker, TrackNames(uris, empty, empty))
    return model, {
        "genre_tracks": by_genre,
        "genre_offsets": offsets,
        "title_vecs": genre_titles / np.linalg.norm(genre_titles, axis=1, keepdims=True),
    }


def _requests(
    model: LlaraPP, material: dict, count: int, seed: int
) -> list[tuple[Case, np.ndarray]]:
    """``count`` (case, title vector) pairs: 10 warm seeds of one genre and that genre's title."""
    rng = np.random.default_rng(seed + 1)
    offsets, tracks = material["genre_offsets"], material["genre_tracks"]
    uris = model.stage.catalog.uris
    out = []
    big = np.flatnonzero(np.diff(offsets) >= 4 * SEEDS)
    for g in rng.choice(big, count):
        seeds = tracks[rng.choice(np.arange(offsets[g], offsets[g + 1]), SEEDS, replace=False)]
        title = material["title_vecs"][g] + 0.05 * rng.standard_normal(TEXT_DIM)
        case = Case(title=f"genre {g}", seeds=tuple(Track("", "", str(uris[s])) for s in seeds))
        out.append((case, (title / np.linalg.norm(title)).astype(np.float32)))
    return out


def _timed(fn):
    w, c = time.perf_counter(), time.thread_time()
    out = fn()
    return out, time.perf_counter() - w, time.thread_time() - c


def _serve(model: LlaraPP, case: Case, title_vec: np.ndarray, k: int) -> dict:
    """One request through encode -> retrieve -> rank; results and per-step times."""
    q, we, ce = _timed(lambda: model.encode(case, lambda texts: title_vec[None]))
    cands, wr, cr = _timed(lambda: model.retrieve(q))
    ranked, wk, ck = _timed(lambda: model.rank(cands, k))
    return {
        "query": q,
        "candidates": cands.candidates,
        "ranked": ranked.indices,
        "wall": (we + wr + wk, we, wr, wk),
        "cpu": (ce + cr + ck, ce, cr, ck),
    }


def _stats(samples: list[tuple[float, ...]]) -> dict:
    a = np.asarray(samples) * 1e3
    names = ("request", "encode", "retrieve", "rank")
    return {
        name: {
            "p50_ms": round(float(np.percentile(a[:, i], 50)), 2),
            "p99_ms": round(float(np.percentile(a[:, i], 99)), 2),
        }
        for i, name in enumerate(names)
    }


def run_ann_benchmark(
    model_dir: Path | str,
    out: Path | str,
    tracks: int = 1_000_000,
    playlists: int = 300_000,
    requests: int = 200,
    k: int = 500,
    seed: int = 0,
) -> dict:
    """Exact vs indexed retrieval over a synthetic catalogue (module docstring); writes JSON."""
    if tracks < 10_000 or playlists < 1_000 or requests < 2:
        raise ValueError(
            f"tracks={tracks}, playlists={playlists}, requests={requests}: expected at least "
            "10,000 tracks, 1,000 playlists and 2 requests"
        )
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)  # one thread, as a server worker runs (OMP_NUM_THREADS=1)
    threadpool_limits(1)  # BLAS too: the ALS fold-in's solve
    base = Recommender.load(model_dir)
    if not isinstance(base, LlaraPP):
        raise ValueError(f"{model_dir}: a {base.name} model; expected a llara++ model")
    started = time.perf_counter()
    model, material = synthetic_model(base, tracks, playlists, seed)
    synth_s = time.perf_counter() - started
    retriever = model.stage.retriever
    _, vectors_s = _timed(lambda: model.catalog_vectors)[:2]
    indexes, built = {}, {}
    for name, (attr, vectors_attr) in INDEXES.items():
        vectors = getattr(retriever, vectors_attr)
        index, wall, _ = _timed(lambda vectors=vectors: AnnIndex.build(vectors))
        setattr(retriever, attr, index)
        indexes[name] = index
        built[name] = {"build_s": round(wall, 1), "bytes": int(index.vectors.nbytes)}
    _, tune_s, _ = _timed(lambda: tune_indexes(model.stage))
    for name, index in indexes.items():
        built[name] |= {**index.meta, "tune_s": round(tune_s, 1)}
    cases = _requests(model, material, requests + 10, seed)
    exact_t, ann_t, exact_runs, rec = (
        [],
        [],
        [],
        {"seed": [], "title": [], "titles": [], "candidates": [], "top_k": []},
    )
    for i, (case, title_vec) in enumerate(cases):
        retriever.behavior_index = retriever.title_index = None
        exact = _serve(model, case, title_vec, k)
        retriever.behavior_index, retriever.title_index = indexes["behavior"], indexes["titles"]
        ann = _serve(model, case, title_vec, k)
        if i < 10:  # warm-up
            continue
        exact_runs.append(exact)
        exact_t.append((exact["wall"], exact["cpu"]))
        ann_t.append((ann["wall"], ann["cpu"]))
        rec["candidates"].append(recall_of(ann["candidates"], exact["candidates"]))
        rec["top_k"].append(recall_of(ann["ranked"], exact["ranked"]))
        rec.update(_source_recalls(model, title_vec, exact["query"], rec))
    sweep = _nprobe_sweep(model, indexes, cases[10:], exact_runs, k)
    result = {
        "synthetic": SYNTHETIC,
        "model": str(model_dir),
        "tracks": tracks,
        "warm_tracks": int(model.stage.n_warm),
        "playlists": playlists,
        "factors": int(model.stage.behavior.shape[1]),
        "n_candidates": int(retriever.n_candidates),
        "title_neighbours": int(retriever.title_neighbours),
        "k": k,
        "requests": requests,
        "synth_s": round(synth_s, 1),
        "catalog_vectors_s": round(vectors_s, 1),
        "indexes": built,
        "exact": {"wall": _stats([w for w, _ in exact_t]), "cpu": _stats([c for _, c in exact_t])},
        "ann": {"wall": _stats([w for w, _ in ann_t]), "cpu": _stats([c for _, c in ann_t])},
        "recall": {
            key: {"mean": round(float(np.mean(v)), 4), "min": round(float(np.min(v)), 4)}
            for key, v in rec.items()
            if v
        },
        "nprobe_sweep": sweep,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    return result


def _nprobe_sweep(model: LlaraPP, indexes: dict, cases: list, exact_runs: list, k: int) -> list:
    """Fewer probed lists than the build chose (both indexes, capped at their lists): CPU p50
    and the recall of the exact run's candidates and final k, on the same requests."""
    tuned = {name: index.nprobe for name, index in indexes.items()}
    out = []
    for nprobe in (8, 16, 32, 64, 128):
        for index in indexes.values():
            index.nprobe = nprobe
        runs = [_serve(model, case, title_vec, k) for case, title_vec in cases]
        out.append(
            {
                "nprobe": nprobe,
                "cpu_p50_ms": round(float(np.median([r["cpu"][0] for r in runs])) * 1e3, 2),
                "retrieve_cpu_p50_ms": round(
                    float(np.median([r["cpu"][2] for r in runs])) * 1e3, 2
                ),
                "rank_cpu_p50_ms": round(float(np.median([r["cpu"][3] for r in runs])) * 1e3, 2),
                "candidates_recall": round(
                    float(
                        np.mean(
                            [
                                recall_of(r["candidates"], e["candidates"])
                                for r, e in zip(runs, exact_runs, strict=True)
                            ]
                        )
                    ),
                    4,
                ),
                "top_k_recall": round(
                    float(
                        np.mean(
                            [
                                recall_of(r["ranked"], e["ranked"])
                                for r, e in zip(runs, exact_runs, strict=True)
                            ]
                        )
                    ),
                    4,
                ),
            }
        )
    for name, index in indexes.items():
        index.nprobe = tuned[name]
    return out


def _exact_top(scores: np.ndarray, n: int) -> np.ndarray:
    return np.argpartition(-scores, n - 1)[:n]


def _source_recalls(model: LlaraPP, title_vec: np.ndarray, query, rec: dict) -> dict:
    """Each dense source's indexed top N against its exact top N, and the nearest titles'
    (the indexes in place)."""
    r = model.stage.retriever
    nearest = r.nearest_titles(title_vec)
    exact_titles = _exact_top(r.title_vectors @ title_vec, r.title_neighbours)
    rec["titles"].append(recall_of(nearest[0], exact_titles))
    seed_q, _ = model.stage.seed_query(query)
    for name, q in (("seed", seed_q), ("title", r.title_query(nearest))):
        if q is None:
            continue
        indexed = r.dense_sources(q, None, query.seed_idx, r.n_candidates)[0]
        scores = r.behavior @ q
        scores[query.seed_idx] = -np.inf
        rec[name].append(recall_of(indexed.top, _exact_top(scores, r.n_candidates)))
    return rec


def format_table(result: dict) -> str:
    rows = [
        f"synthetic catalogue: {result['tracks']:,} tracks ({result['warm_tracks']:,} warm), "
        f"{result['playlists']:,} playlists, {result['factors']} factors; N = "
        f"{result['n_candidates']}, k = {result['k']}, {result['requests']} requests, one thread",
        "",
        "| retrieval | request p50 | p99 | retrieve p50 | rank p50 | CPU p50 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("exact", "ann"):
        w, c = result[name]["wall"], result[name]["cpu"]
        rows.append(
            f"| {name} | {w['request']['p50_ms']} ms | {w['request']['p99_ms']} ms | "
            f"{w['retrieve']['p50_ms']} ms | {w['rank']['p50_ms']} ms | "
            f"{c['request']['p50_ms']} ms |"
        )
    rows += ["", "| recall of the exact | mean | min |", "|---|---:|---:|"]
    for key, v in result["recall"].items():
        rows.append(f"| {key} | {v['mean']} | {v['min']} |")
    rows += [
        "",
        "| index | rows | lists | nprobe tuned | fused-candidate recall at tuning | build s | "
        "tune s | MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in result["indexes"].items():
        rows.append(
            f"| {name} | {m['rows']:,} | {m['nlist']} | {m['nprobe']} | {m['recall']:.4f} | "
            f"{m['build_s']} | {m['tune_s']} | {m['bytes'] / 2**20:.0f} |"
        )
    rows += [
        "",
        "| nprobe (both) | CPU p50 | retrieve CPU p50 | rank CPU p50 | candidates recall | "
        "top-k recall |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["nprobe_sweep"]:
        rows.append(
            f"| {r['nprobe']} | {r['cpu_p50_ms']} ms | {r['retrieve_cpu_p50_ms']} ms | "
            f"{r['rank_cpu_p50_ms']} ms | "
            f"{r['candidates_recall']} | {r['top_k_recall']} |"
        )
    return "\n".join(rows)
