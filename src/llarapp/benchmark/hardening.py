"""Hardening benchmark: fuzzing, injected faults and a soak, each check with its figures.

``llarapp benchmark hardening --out runs/hardening.json [--side-by-side]``:

1. builds a synthetic model in ``--work`` (synthetic MPD slices, ingest, split, a small
   LLaRA++, its ranker exported to ONNX), unless one is there already;
2. starts ``llarapp serve`` on it (``python -m llarapp_kserve``, 127.0.0.1, ``--workers``);
3. runs the checks, each a row of the table:

   - ``api_fuzz``: schemathesis generates requests for every operation of the server's
     ``/openapi.json`` (valid and invalid inputs): no 5xx, and the server is ready after;
   - ``ingest_fuzz``: hypothesis generates MPD slices with malformed records (wrong types,
     missing fields, bad URIs, lone surrogates, truncated / non-JSON / non-UTF-8 files):
     ingest never raises, every playlist and track is kept or quarantined with a reason;
   - ``damaged_model``: each model file (``arrays.npz``, the projector and ranker
     safetensors, the ONNX ranker, ``model.json``) truncated, or its header overwritten:
     the load is refused with one line naming the file;
   - ``reload_damaged``: the running server is asked to load a damaged copy as its challenger
     (``POST /v1/canary``): a 422 naming the file, and the champion keeps answering;
   - ``killed_split``: ``llarapp data split`` killed (SIGKILL) while writing its second table:
     the ingest tables are byte-identical, no split file is half-written or looks complete,
     and a rerun writes the same tables as an uninterrupted split;
   - ``s3_down``: ``llarapp serve --model s3://...`` with no S3 server listening: it exits
     with one line after bounded retries (:data:`llarapp.data.storage.RETRIES`);
   - ``soak``: ``--soak-requests`` requests at concurrency ``--concurrency``: 0 errors,
     the resident memory of every server process sampled along the way;

4. with ``--side-by-side``: ``llarapp train`` alone, then two at once, each boxed to half
   the CPUs (``LLARAPP_THREADS``, what a cgroup quota of half the machine gives), then two at
   once unboxed (each sized to the whole machine): each run's time over its time alone.

Files out: ``--out`` JSON ``{"checks": {name: {"ok", ...figures}}, "side_by_side": {...},
"conditions": {...}}``; the work folder keeps the model, the server log and the fuzz inputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: the small model the checks serve (a smoke model: seconds of training on two cores)
SMOKE_TRAIN = {
    "als": {"factors": 8, "iterations": 5},
    "projector": {"hidden": 32, "epochs": 3},
    "n_candidates": 120,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "epochs": 2,
    "batch_size": 16,
    "max_valid_cases": 40,
    "hard_negatives": 24,
    "random_negatives": 8,
}
#: a short export: fp32 pinned (no timing decides anything here), no encoder export
SMOKE_EXPORT = {
    "warmup_runs": 1,
    "latency_runs": 5,
    "throughput_batch": 8,
    "throughput_runs": 1,
    "calibration_playlists": 16,
    "max_calibration_cases": 32,
    "encoder": False,
    "variant": "onnx_fp32",
}
#: (label, file under the model folder) damaged one at a time; ONNX: the served graph
DAMAGED_FILES = (
    ("npz", "arrays.npz"),
    ("safetensors (projector)", "track_projector.safetensors"),
    ("safetensors (ranker)", "ranker/model.safetensors"),
    ("onnx", None),  # the ranker graph the server loads, from onnx/manifest.json
    ("json", "model.json"),
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _python_env() -> dict[str, str]:
    """This process's environment, with the source tree importable (a checkout's kserve/)."""
    from llarapp.serving.client import server_env

    return server_env()


# ---------------------------------------------------------------------------- the model
def build_synthetic(work: Path, playlists: int = 120, seed: int = 5) -> dict[str, Path]:
    """Synthetic slices, ingest, split, a smoke LLaRA++ and its ONNX ranker, under ``work``
    (reused when ``work/model/onnx/manifest.json`` is there)."""
    from llarapp.config import SplitConfig
    from llarapp.data.ingest import ingest
    from llarapp.data.split import split
    from llarapp.data.synth import generate

    paths = {k: work / k for k in ("mpd", "data", "split", "model")}
    if (paths["model"] / "onnx" / "manifest.json").is_file():
        return paths
    from llarapp.export.onnx_export import ExportConfig, export_onnx
    from llarapp.training.llara import LlaraTrainConfig, train_llara

    generate(playlists, paths["mpd"], seed=seed)
    ingest(str(paths["mpd"]), paths["data"])
    split(paths["data"], paths["split"], SplitConfig(seed=1))
    train_llara(
        paths["data"],
        paths["split"],
        paths["model"],
        LlaraTrainConfig.from_dict(SMOKE_TRAIN),
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
    )
    export_onnx(paths["model"], paths["data"], paths["split"], ExportConfig(**SMOKE_EXPORT))
    return paths


def request_bodies(data_dir: Path, split_dir: Path, k: int = 50) -> list[bytes]:
    """One ``/v1/recommend`` body per validation and test case (title and/or seeds)."""
    from llarapp.data.dataset import load_cases
    from llarapp.serving.request import request_body

    cases = [ec.case for fold in ("valid", "test") for ec in load_cases(data_dir, split_dir, fold)]
    return [json.dumps(request_body(c, k)).encode() for c in cases]


# ---------------------------------------------------------------------------- api fuzz
def fuzz_api(url: str, max_examples: int = 50, seed: int = 0) -> dict[str, Any]:
    """schemathesis over every operation of ``url/openapi.json``, valid and invalid inputs
    (operations on ``{model_name}``: also with each served model's name).

    Returns:
        ``{"ok", "operations", "calls", "statuses" {code: n}, "server_errors" [first 10:
        {"operation", "status", "body", "request"}], "ready_after"}``; ok: no 5xx and the
        server still ready.
    """
    import requests
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    from llarapp.serving.client import get

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    session = requests.Session()
    statuses: dict[str, int] = {}
    errors: list[dict[str, Any]] = []
    operations = 0
    # the served models by name too: a random {model_name} only ever meets a 404
    names = json.loads(get(url, "/v1/models")[1])["models"]
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        named = "{model_name}" in operation.path
        for mode, path_parameters in [
            (mode, fixed)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            for fixed in [None] + ([{"model_name": n} for n in names] if named else [])
        ]:

            @settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(mode, path_parameters=path_parameters))
            def call(case) -> None:
                response = case.call(base_url=url, session=session, timeout=120)
                code = str(response.status_code)
                statuses[code] = statuses.get(code, 0) + 1
                if response.status_code >= 500:
                    errors.append(
                        {
                            "operation": case.operation.label,
                            "status": response.status_code,
                            "body": response.text[:300],
                            "request": case.as_curl_command(),
                        }
                    )

            try:
                call()
            except Unsatisfiable:  # negative mode: an operation with no input to make invalid
                continue
    ready = get(url, "/v2/health/ready")[0] == 200
    return {
        "ok": not errors and ready,
        "operations": operations,
        "calls": sum(statuses.values()),
        "statuses": dict(sorted(statuses.items())),
        "server_errors": errors[:50],
        "ready_after": ready,
    }


# ---------------------------------------------------------------------------- ingest fuzz
def _slice_files():
    """A hypothesis strategy: ``[(name, bytes)]``, MPD slice files with malformed records."""
    from hypothesis import strategies as st

    scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
    junk = st.recursive(
        scalar,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=6,
    )
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    good_uri = st.text(alphabet, min_size=22, max_size=22).map(lambda s: "spotify:track:" + s)
    bad_text = st.sampled_from(["", " ", "x" * 1200, "lone \ud800 surrogate"])
    good_text = st.text(min_size=1, max_size=12).filter(str.strip)
    # mostly well-formed (so records are kept, and duplicates meet), one value in four bad
    name = st.one_of(good_text, good_text, good_text, bad_text | junk)
    uri = st.one_of(good_uri, good_uri, good_uri, st.just("spotify:track:short") | junk)
    pid = st.one_of(st.integers(0, 12), st.integers(0, 12), st.integers(-2, -1) | junk)

    def drop(record: Any, key: str | None) -> Any:  # a required field missing, sometimes
        return {k: v for k, v in record.items() if k != key} if isinstance(record, dict) else record

    track = st.builds(
        drop,
        st.fixed_dictionaries(
            {"track_uri": uri, "track_name": name, "artist_name": name},
            optional={
                "pos": st.integers(-2, 10) | junk,
                "album_name": name,
                "duration_ms": st.integers() | junk,
            },
        ),
        st.sampled_from([None] * 6 + ["track_uri", "track_name", "artist_name"]),
    )
    playlist = st.builds(
        drop,
        st.fixed_dictionaries(
            {"name": name, "pid": pid, "tracks": st.lists(track | junk, max_size=6) | junk},
            optional={
                "num_followers": st.integers(-5, 5) | junk,
                "collaborative": st.sampled_from(["true", "false"]) | junk,
            },
        ),
        st.sampled_from([None] * 6 + ["name", "pid", "tracks"]),
    )
    document = st.fixed_dictionaries(
        {"info": st.just({"slice": "0-999"}), "playlists": st.lists(playlist | junk, max_size=5)}
    )

    def encode(doc: Any, damage: str, cut: float) -> bytes:
        raw = json.dumps(doc).encode()  # \\ud800 stays an escape: a lone surrogate once parsed
        if damage == "truncated":
            return raw[: int(len(raw) * cut)]
        if damage == "not_utf8":
            return raw[: int(len(raw) * cut)] + b"\xff\xfe" + raw[int(len(raw) * cut) :]
        if damage == "not_json":
            return b"<html>503</html>"
        if damage == "not_an_object":
            return json.dumps(doc["playlists"]).encode()
        return raw

    one = st.builds(
        encode,
        document,
        st.sampled_from(["whole"] * 4 + ["truncated", "not_utf8", "not_json", "not_an_object"]),
        st.floats(0.0, 1.0),
    )
    return st.lists(one, min_size=1, max_size=3).map(
        lambda files: [
            (f"mpd.slice.{i * 1000}-{i * 1000 + 999}.json", b) for i, b in enumerate(files)
        ]
    )


def check_ingest(files: list[tuple[str, bytes]], work: Path) -> list[str]:
    """Write ``files``, ingest them; what is wrong with the outcome (empty: nothing).

    Every parsed playlist and track entry is kept or quarantined (the report's invariants,
    checked against the tables and ``quarantine.jsonl``), every quarantine line has a reason
    and a kind, and a file whose bytes parse whole has all its playlists counted.
    """
    import pyarrow.parquet as pq

    from llarapp.data import schema
    from llarapp.data.ingest import ingest

    src, out = work / "mpd", work / "out"
    shutil.rmtree(work, ignore_errors=True)
    src.mkdir(parents=True)
    for name, raw in files:
        (src / name).write_bytes(raw)
    try:
        report = ingest(str(src), out)
    except Exception as exc:  # the finding: reported, not raised
        return [f"ingest raised {type(exc).__name__}: {exc}"]
    problems = []
    r = report
    if r.playlists_in != r.playlists_ok + r.playlists_quarantined:
        problems.append(f"playlists: {r.playlists_in} in != {r.playlists_ok} ok + quarantined")
    if r.tracks_in != r.interactions_ok + r.tracks_quarantined + r.tracks_dropped_with_playlist:
        problems.append(f"tracks: {r.tracks_in} in, not all kept or quarantined")
    if pq.read_metadata(out / schema.PLAYLISTS_FILE).num_rows != r.playlists_ok:
        problems.append("playlists.parquet rows != playlists_ok")
    if pq.read_metadata(out / schema.INTERACTIONS_FILE).num_rows != r.interactions_ok:
        problems.append("interactions.parquet rows != interactions_ok")
    # JSON Lines: "\n" ends a record (U+0085 and U+2028 stay raw inside strings)
    lines = (out / schema.QUARANTINE_FILE).read_text(encoding="utf-8").split("\n")
    records = [json.loads(line) for line in lines if line]
    if len(records) != r.quarantine_records:
        problems.append(f"{len(records)} quarantine lines != {r.quarantine_records} reported")
    if any(not rec.get("reason") or not rec.get("kind") for rec in records):
        problems.append("a quarantine record without reason or kind")
    whole = 0
    for _, raw in files:
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(doc, dict) and isinstance(doc.get("playlists"), list):
            whole += len(doc["playlists"])
    damaged = sum(1 for rec in records if rec.get("level") == "file")
    if damaged == 0 and r.playlists_in != whole:
        problems.append(f"{whole} playlists in the files, {r.playlists_in} counted")
    return problems


def fuzz_ingest(work: Path, max_examples: int = 200) -> dict[str, Any]:
    """hypothesis: ``max_examples`` generated sets of slice files through :func:`check_ingest`.

    Returns:
        ``{"ok", "examples", "crashes", "problems" [first 5], "quarantined" {kind: n}}``.
    """
    from hypothesis import HealthCheck, Phase, given, settings

    found: list[dict[str, Any]] = []
    kinds: dict[str, int] = {}
    runs = [0]

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(files=_slice_files())
    def run(files) -> None:
        runs[0] += 1
        problems = check_ingest(files, work / "case")
        if problems:
            found.append({"problems": problems, "files": [n for n, _ in files]})
            (work / f"finding-{len(found)}").mkdir(parents=True, exist_ok=True)
            for name, raw in files:
                (work / f"finding-{len(found)}" / name).write_bytes(raw)
            return
        report = json.loads((work / "case" / "out" / "ingest_report.json").read_text())
        for kind, n in report["reasons"].items():
            kinds[kind] = kinds.get(kind, 0) + n

    quiet = logging.getLogger("llarapp.data.ingest")
    level, quiet.level = quiet.level, logging.ERROR  # a warning per quarantined file otherwise
    try:
        run()
    finally:
        quiet.setLevel(level)
    crashes = sum(1 for f in found if f["problems"][0].startswith("ingest raised"))
    return {
        "ok": not found,
        "examples": runs[0],
        "crashes": crashes,
        "problems": found[:5],
        "quarantined": dict(sorted(kinds.items())),
    }


# ---------------------------------------------------------------------------- faults
def _onnx_file(model_dir: Path) -> str:
    """The ranker graph the server loads (the serving graph when exported)."""
    from llarapp.export.runtime import MANIFEST_FILE, ONNX_DIR

    manifest = json.loads((model_dir / ONNX_DIR / MANIFEST_FILE).read_text())
    ranker = manifest.get("serving") or manifest["ranker"]
    return f"{ONNX_DIR}/{ranker['file']}"


def damage(path: Path, how: str) -> None:
    """``truncated``: cut to half its bytes; ``header``: its first 64 bytes overwritten."""
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "header":
        path.write_bytes(b"\x13" * 64 + raw[64:])
    else:
        raise ValueError(f"damage how={how!r}: expected truncated or header")


def damaged_copy(model_dir: Path, dest: Path, file: str, how: str) -> Path:
    """A copy of ``model_dir`` at ``dest`` with ``file`` damaged."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(model_dir, dest)
    damage(dest / file, how)
    return dest


def damaged_model_checks(model_dir: Path, work: Path) -> dict[str, Any]:
    """Each file of :data:`DAMAGED_FILES`, truncated and header-damaged, loaded by
    :meth:`ServingEngine.load`: refused with a one-line message naming the file?"""
    from llarapp.serving.engine import ModelLoadError, ServingEngine

    rows = []
    for label, file in DAMAGED_FILES:
        file = file or _onnx_file(model_dir)
        for how in ("truncated", "header"):
            copy = damaged_copy(model_dir, work / "damaged", file, how)
            try:
                ServingEngine.load(str(copy))
                outcome, message = "loaded", ""
            except ModelLoadError as exc:
                outcome, message = "refused", str(exc)
            except Exception as exc:  # refused, but not with the clear message
                outcome, message = f"raised {type(exc).__name__}", str(exc)
            clear = outcome == "refused" and file in message and "\n" not in message
            rows.append(
                {
                    "file": file,
                    "type": label,
                    "damage": how,
                    "outcome": outcome,
                    "clear": clear,
                    "message": message[:300],
                }
            )
    shutil.rmtree(work / "damaged", ignore_errors=True)
    return {"ok": all(r["clear"] for r in rows), "cases": len(rows), "rows": rows}


def reload_damaged(url: str, model_dir: Path, work: Path, body: bytes) -> dict[str, Any]:
    """Ask the running server to load a damaged copy as its challenger: refused (422, the file
    named), the champion answering before and after."""
    from llarapp.serving.client import post_json

    before = post_json(url, "/v1/recommend", body)
    copy = damaged_copy(model_dir, work / "reload-damaged", "arrays.npz", "truncated")
    status, answer = post_json(url, "/v1/canary", {"percent": 50, "challenger": str(copy)})
    after = [post_json(url, "/v1/recommend", body) for _ in range(5)]
    versions = {a[1].get("model_version") for a in after}
    ok = (
        before[0] == 200
        and status == 422
        and "arrays.npz" in answer.get("error", "")
        and all(a[0] == 200 for a in after)
        and versions == {before[1]["model_version"]}
    )
    return {
        "ok": ok,
        "canary_status": status,
        "canary_error": answer.get("error", "")[:300],
        "recommend_after": sorted({a[0] for a in after}),
        "model_version": sorted(v for v in versions if v),
    }


#: run in a subprocess: split, killed with SIGKILL while writing its second table
_KILL_SPLIT = """
import os, signal, sys
import pyarrow.parquet as pq
from llarapp.config import SplitConfig
from llarapp.data.split import split
real, calls = pq.write_table, [0]
def write_table(table, where, **kwargs):
    calls[0] += 1
    if calls[0] == 2:  # half the bytes of the second table, then the process dies
        real(table, where, **kwargs)
        raw = open(where, "rb").read()
        open(where, "wb").write(raw[: len(raw) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    real(table, where, **kwargs)
pq.write_table = write_table
split(sys.argv[1], sys.argv[2], SplitConfig(seed=1))
"""


def killed_split(data_dir: Path, work: Path) -> dict[str, Any]:
    """``split`` SIGKILLed mid-write: the ingest tables intact, nothing in the split folder
    half-written or looking complete, a rerun equal to an uninterrupted split."""
    import pyarrow.parquet as pq

    from llarapp.config import SplitConfig
    from llarapp.data.split import split

    reference, out = work / "split-reference", work / "split-killed"
    for folder in (reference, out):
        shutil.rmtree(folder, ignore_errors=True)
    split(data_dir, reference, SplitConfig(seed=1))
    inputs = {p.name: _sha256(p) for p in sorted(data_dir.iterdir()) if p.is_file()}
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_SPLIT, str(data_dir), str(out)],
        env=_python_env(),
        capture_output=True,
        text=True,
    )
    killed = proc.returncode == -signal.SIGKILL
    intact = inputs == {p.name: _sha256(p) for p in sorted(data_dir.iterdir()) if p.is_file()}
    left = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    complete_looking = (out / "split.json").exists()
    unreadable = []
    for name in left:
        if name.endswith(".parquet"):
            try:
                pq.read_metadata(out / name)
            except Exception:
                unreadable.append(name)
    split(data_dir, out, SplitConfig(seed=1))
    same = all(
        pq.read_table(out / name).equals(pq.read_table(reference / name))
        for name in ("folds.parquet", "cases.parquet")
    )
    leftovers = sorted(p.name for p in out.iterdir() if ".tmp-" in p.name)
    return {
        "ok": killed and intact and not complete_looking and not unreadable and same,
        "killed": killed,
        "inputs_intact": intact,
        "left_after_kill": left,
        "half_written": unreadable,
        "rerun_equals_reference": same,
        "temp_files_left": leftovers,  # NAME.tmp-PID of the killed process (harmless)
    }


def s3_down(work: Path) -> dict[str, Any]:
    """``llarapp serve --model s3://...`` with the S3 endpoint down (a port nothing listens
    on): exits non-zero with one line, after bounded retries."""
    from llarapp.data.storage import RETRIES
    from llarapp.serving.client import free_port

    env = {
        **_python_env(),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": "hardening",
        "AWS_SECRET_ACCESS_KEY": "hardening-secret",
    }
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "llarapp",
            "serve",
            "--model",
            "s3://models/llarapp/v1",
            "--port",
            str(free_port()),
            "--events",
            str(work / "s3-down-events.db"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - start
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    one_line = "Traceback" not in proc.stderr and "cannot reach" in last
    return {
        "ok": proc.returncode != 0 and one_line,
        "exit_code": proc.returncode,
        "seconds": round(seconds, 1),
        "tries": RETRIES + 1,
        "error": last[:300],
    }


# ---------------------------------------------------------------------------- soak
def _rss_mb(proc: subprocess.Popen) -> dict[str, float]:
    """Resident memory (MiB) of the server and of each of its worker processes."""
    import psutil

    root = psutil.Process(proc.pid)
    out = {}
    for p in [root, *root.children(recursive=True)]:
        try:
            out[str(p.pid)] = round(p.memory_info().rss / 2**20, 1)
        except psutil.NoSuchProcess:
            continue
    return out


def soak(
    url: str, proc: subprocess.Popen, bodies: list[bytes], requests: int, concurrency: int
) -> dict[str, Any]:
    """``requests`` requests at ``concurrency``, in ten rounds, RSS sampled after each.

    Returns:
        ``{"ok", "requests", "errors", "p50_ms", "p99_ms", "rps", "rss_mb" {pid: [MiB per
        round]}, "rss_growth_mb" {pid: last - first}}``; ok: 0 errors.
    """
    from llarapp.serving.client import replay

    rounds = 10
    per_round = -(-requests // rounds)
    replay(url, bodies[: 2 * concurrency], concurrency)  # warm: caches, lazy pools
    samples: dict[str, list[float]] = {}
    for pid, mb in _rss_mb(proc).items():
        samples[pid] = [mb]
    latencies: list[float] = []
    errors, seconds, sent = 0, 0.0, 0
    for r in range(rounds):
        n = min(per_round, requests - sent)
        round_bodies = [bodies[(sent + i) % len(bodies)] for i in range(n)]
        result = replay(url, round_bodies, concurrency)
        latencies += result.latencies_ms
        errors += result.errors
        seconds += result.seconds
        sent += n
        for pid, mb in _rss_mb(proc).items():
            samples.setdefault(pid, []).append(mb)
        log.info("soak: round %d/%d, %d requests, %d errors", r + 1, rounds, sent, errors)
    import numpy as np

    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "ok": errors == 0 and sent == requests,
        "requests": sent,
        "concurrency": concurrency,
        "errors": errors,
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "rps": round(len(latencies) / seconds, 1) if seconds else 0.0,
        "rss_mb": samples,
        "rss_growth_mb": {pid: round(v[-1] - v[0], 1) for pid, v in samples.items()},
    }


# ---------------------------------------------------------------------------- side by side
def _train(data_dir: Path, out: Path, threads: int | None, log_file: Path) -> subprocess.Popen:
    env = {k: v for k, v in _python_env().items() if not k.endswith("_NUM_THREADS")}
    env.pop("LLARAPP_THREADS", None)
    if threads is not None:
        env["LLARAPP_THREADS"] = str(threads)
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        sys.executable,
        "-m",
        "llarapp",
        "train",
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--epochs",
        "1",
    ]
    return subprocess.Popen(cmd, env=env, stdout=open(log_file, "ab"), stderr=subprocess.STDOUT)


def _timed(procs: list[subprocess.Popen]) -> list[float]:
    start = time.perf_counter()
    done: dict[int, float] = {}
    while len(done) < len(procs):
        for i, p in enumerate(procs):
            if i not in done and p.poll() is not None:
                if p.returncode != 0:
                    raise RuntimeError(f"llarapp train exited with {p.returncode}")
                done[i] = time.perf_counter() - start
        time.sleep(0.2)
    return [round(done[i], 1) for i in range(len(procs))]


def side_by_side(data_dir: Path, work: Path) -> dict[str, Any]:
    """``llarapp train --epochs 1`` alone (sized to this machine), then two at once boxed to
    half the CPUs each, then two at once unboxed; seconds and ratios to the time alone."""
    from llarapp.cpu import usable_cpus

    cpus = usable_cpus()
    half = max(1, cpus // 2)
    log_file = work / "side-by-side.log"
    _timed([_train(data_dir, work / "sbs-warm", None, log_file)])  # the embedding cache
    load = {"alone": os.getloadavg()[0]}  # 1-minute load before each phase: other jobs' share
    alone = _timed([_train(data_dir, work / "sbs-alone", None, log_file)])[0]
    load["boxed"] = os.getloadavg()[0]
    boxed = _timed([_train(data_dir, work / f"sbs-boxed-{i}", half, log_file) for i in (0, 1)])
    load["unboxed"] = os.getloadavg()[0]
    unboxed = _timed([_train(data_dir, work / f"sbs-unboxed-{i}", None, log_file) for i in (0, 1)])
    worst = max(boxed) / alone
    return {
        "ok": worst <= 2.5,
        "load_average_before": {k: round(v, 1) for k, v in load.items()},
        "cpus": cpus,
        "alone_s": alone,
        "alone_threads": cpus,
        "boxed_threads": half,
        "boxed_s": boxed,
        "boxed_ratio": [round(s / alone, 2) for s in boxed],
        "unboxed_s": unboxed,
        "unboxed_ratio": [round(s / alone, 2) for s in unboxed],
    }


# ---------------------------------------------------------------------------- the run
def run_hardening(
    out: Path | str,
    work: Path | str = "runs/hardening",
    soak_requests: int = 20_000,
    concurrency: int = 8,
    workers: int = 2,
    api_examples: int = 100,
    ingest_examples: int = 300,
    with_side_by_side: bool = False,
) -> dict[str, Any]:
    """Every check (module docstring); writes ``out`` and returns the result."""
    from llarapp.cpu import usable_cpus
    from llarapp.serving.client import start_server, stop_server, wait_ready

    out, work = Path(out), Path(work)
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    paths = build_synthetic(work)
    bodies = request_bodies(paths["data"], paths["split"])
    checks: dict[str, Any] = {}
    checks["ingest_fuzz"] = fuzz_ingest(work / "ingest-fuzz", ingest_examples)
    checks["damaged_model"] = damaged_model_checks(paths["model"], work)
    checks["killed_split"] = killed_split(paths["data"], work)
    checks["s3_down"] = s3_down(work)
    events = work / "events.db"
    for stale in work.glob("events.db*"):
        stale.unlink()
    server_log = work / "server.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'serve-mlflow.db'}"}
    proc, url = start_server(
        str(paths["model"]),
        None,
        "--events",
        str(events),
        "--workers",
        str(workers),
        log_file=server_log,
        env=env,
    )
    try:
        wait_ready(url, proc)
        checks["api_fuzz"] = fuzz_api(url, api_examples)
        checks["reload_damaged"] = reload_damaged(url, paths["model"], work, bodies[0])
        checks["soak"] = soak(url, proc, bodies, soak_requests, concurrency)
    finally:
        code = stop_server(proc)
    checks["soak"]["server_exit"] = code
    result: dict[str, Any] = {
        "checks": checks,
        "conditions": {
            "cpus": usable_cpus(),
            "load_average_before": os.getloadavg(),
            "workers": workers,
            "catalog_requests": len(bodies),
            "started_at": started,
            "seconds": 0.0,
        },
    }
    if with_side_by_side:
        result["side_by_side"] = side_by_side(paths["data"], work)
    result["conditions"]["seconds"] = round(time.time() - started, 1)
    result["ok"] = (
        all(c["ok"] for c in checks.values()) and result.get("side_by_side", {"ok": True})["ok"]
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as f:
        json.dump(result, f, indent=2, default=float)
    os.replace(f.name, out)
    return result


def _figures(name: str, c: dict[str, Any]) -> str:
    if name == "api_fuzz":
        fives = sum(n for s, n in c["statuses"].items() if s.startswith("5"))
        return (
            f"{c['operations']} operations, {c['calls']} calls, 5xx: {fives}, "
            f"statuses {c['statuses']}, ready after: {c['ready_after']}"
        )
    if name == "ingest_fuzz":
        return (
            f"{c['examples']} generated slice sets, {c['crashes']} crashes, "
            f"{len(c['problems'])} unaccounted records; quarantined {c['quarantined']}"
        )
    if name == "damaged_model":
        refused = sum(r["clear"] for r in c["rows"])
        kinds = sorted({r["type"] for r in c["rows"]})
        return f"{refused}/{c['cases']} refused with the file named ({', '.join(kinds)})"
    if name == "reload_damaged":
        return (
            f"canary load → {c['canary_status']}; recommend after → {c['recommend_after']}"
            f" by {c['model_version']}"
        )
    if name == "killed_split":
        return (
            f"killed: {c['killed']}, inputs intact: {c['inputs_intact']}, half-written: "
            f"{c['half_written'] or 'none'}, rerun = reference: {c['rerun_equals_reference']}"
        )
    if name == "s3_down":
        return f"exit {c['exit_code']} after {c['seconds']} s ({c['tries']} tries): {c['error']}"
    if name == "soak":
        growth = ", ".join(f"{mb:+.1f}" for mb in c["rss_growth_mb"].values())
        first = ", ".join(f"{v[0]:.0f}" for v in c["rss_mb"].values())
        return (
            f"{c['requests']} requests at c={c['concurrency']}: {c['errors']} errors, "
            f"p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms, {c['rps']} req/s; RSS MiB at "
            f"start [{first}], growth [{growth}]"
        )
    return ""


def format_table(result: dict[str, Any]) -> str:
    """The checks as a Markdown table (check, result, figures), then the side-by-side one."""
    lines = ["| check | result | figures |", "|---|---|---|"]
    for name, c in result["checks"].items():
        lines.append(f"| {name} | {'pass' if c['ok'] else 'FAIL'} | {_figures(name, c)} |")
    sbs = result.get("side_by_side")
    if sbs:
        lines += [
            "",
            "| llarapp train --epochs 1 | threads each | seconds | x alone |",
            "|---|---|---|---|",
            f"| alone | {sbs['alone_threads']} | {sbs['alone_s']} | 1.00 |",
        ]
        for label, key, threads in (
            ("two at once, boxed", "boxed", sbs["boxed_threads"]),
            ("two at once, unboxed", "unboxed", sbs["alone_threads"]),
        ):
            seconds = " / ".join(str(s) for s in sbs[f"{key}_s"])
            ratios = " / ".join(f"{r:.2f}" for r in sbs[f"{key}_ratio"])
            lines.append(f"| {label} | {threads} | {seconds} | {ratios} |")
        lines.append(f"\n1-minute load average before each phase: {sbs['load_average_before']}")
    return "\n".join(lines)
