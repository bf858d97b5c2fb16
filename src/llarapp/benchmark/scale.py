"""``llarapp benchmark scale``: what every stage costs as the data grows (docs/scale.md).

``llarapp benchmark scale --sizes 10000,100000,1000000 --out FILE.json [--chart PNG]
[--max-minutes M] [--work DIR]`` runs, for each size (number of synthetic playlists), the
product's own commands in subprocesses, each timed (wall) with its peak RSS (``os.wait4``):

1. ``llarapp data synth`` (MPD-like sizes: :mod:`llarapp.data.synth`), ``llarapp data
   ingest`` (the slice files are deleted afterwards: 19 GB at 1 M), ``llarapp data split``;
2. the numpy floor of that catalogue: one ``(1, 64) x (64, n_tracks)`` float32 product and
   ``argpartition`` of the top k, median of repeats (in this process);
3. ``llarapp features behavior --config`` (one ALS fit of ``llarapp train``'s configuration,
   no tuning);
4. ``llarapp features text``: texts (tracks + titles), how many were embedded (the new
   vectors in the embedding cache, ``$LLARAPP_CACHE``; the rest were cached), embedded/s
   (also from a run stopped at the budget's end);
5. ``llarapp train --data`` (``--epochs``; it embeds through the same cache, so after step 4
   its text features are cache reads), and the parts ``train_report.json`` times (text
   features, the fold stages, the full stage, feature weights, the ranker's epochs; the rest:
   split, refit on every playlist, saving, the reference profile), and the model's size on
   disk;
6. ``llarapp serve --workers W``: time until ready, then requests of a title + ``seeds`` seed
   tracks (:func:`llarapp.benchmark.serving.build_requests`, the validation cases) at
   concurrency 1 and 8 through ``POST /v1/recommend`` (:func:`llarapp.serving.client.replay`),
   then each worker's RSS, PSS and USS (``/proc/PID/smaps_rollup``) and the PSS of every
   server process together (supervisor + workers: what the machine holds).

Budget: the whole run has ``max_minutes``; sizes run from the smallest. A stage is skipped when
its time predicted from the smaller sizes (exponent ``max(fitted, 1)``: linear growth at least,
from the largest measured size) exceeds what is left, and a stage that runs is stopped when the
budget ends; what depends on a missing stage is skipped too. Every metric with two or more
measured sizes gets a log-log exponent (least squares), and its missing sizes are filled from
that fit, labelled ``extrapolated`` in the table and the JSON.

``--reuse EARLIER.json`` takes the sizes an earlier run of the same settings measured instead of
running them again; ``--redo serve`` (any stages) runs those stages of the reused sizes again, on
their folders under ``--work``, after a change to what they measure.

JSON written to ``out``: ``{"sizes", "settings", "machine": {"cpus", "load"}, "runs": {SIZE:
{"minutes", "notes": {STAGE: why skipped}, "load", "train_seconds", "workers", "supervisor",
"reused_from", "redone"}},
"metrics": {KEY: {"label", "unit", "stage", "exponent", "fitted_on", "values": {SIZE: {"value",
"source": "measured" | "extrapolated"}}}}}``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: (key, label, unit, stage) of every metric, in table order.
METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("synth_s", "synth: wall", "s", "synth"),
    ("synth_rss", "synth: peak RSS", "MiB", "synth"),
    ("playlists", "playlists ingested", "", "ingest"),
    ("rows", "rows (playlist tracks)", "", "ingest"),
    ("tracks", "distinct tracks", "", "ingest"),
    ("ingest_s", "ingest: wall", "s", "ingest"),
    ("ingest_rss", "ingest: peak RSS", "MiB", "ingest"),
    ("split_s", "split: wall", "s", "split"),
    ("floor_ms", "numpy floor (1x64 @ 64xN + top k)", "ms", "numpy floor"),
    ("texts", "text features: texts", "", "text features"),
    ("texts_embedded", "text features: embedded (not cached)", "", "text features"),
    ("text_s", "text features: wall", "s", "text features"),
    ("texts_per_s", "text features: embedded/s", "1/s", "text features"),
    ("text_rss", "text features: peak RSS", "MiB", "text features"),
    ("als_s", "ALS fit: wall", "s", "ALS fit"),
    ("als_rss", "ALS fit: peak RSS", "MiB", "ALS fit"),
    ("train_s", "train: wall", "s", "train"),
    ("train_rss", "train: peak RSS", "MiB", "train"),
    ("train_text_s", "train: text features", "s", "train"),
    ("train_fold_stages_s", "train: fold stages (ALS, retrieval, ranker cases)", "s", "train"),
    ("train_stage_full_s", "train: full stage (ALS, valid cases)", "s", "train"),
    ("train_weights_s", "train: feature weights", "s", "train"),
    ("train_ranker_s", "train: ranker epochs", "s", "train"),
    ("train_rest_s", "train: rest (split, refit, save, profile)", "s", "train"),
    ("model_mib", "model size on disk", "MiB", "train"),
    ("server_start_s", "server start (until ready)", "s", "serve"),
    ("worker_rss", "worker RSS (mean)", "MiB", "serve"),
    ("worker_pss", "worker PSS (mean)", "MiB", "serve"),
    ("worker_uss", "worker USS (mean)", "MiB", "serve"),
    ("server_pss", "server PSS, all processes (the machine's share)", "MiB", "serve"),
    ("c1_p50", "serving c1 p50", "ms", "serve"),
    ("c1_p99", "serving c1 p99", "ms", "serve"),
    ("c8_p50", "serving c8 p50", "ms", "serve"),
    ("c8_p99", "serving c8 p99", "ms", "serve"),
    ("serve_s", "serve stage: wall", "s", "serve"),
)
#: Each stage's wall-time metric (what the budget predicts from) and the stages it needs.
STAGE_TIME = {
    "synth": "synth_s",
    "ingest": "ingest_s",
    "split": "split_s",
    "text features": "text_s",
    "ALS fit": "als_s",
    "train": "train_s",
    "serve": "serve_s",
    "numpy floor": None,
}
NEEDS = {
    "ingest": "synth",
    "split": "ingest",
    "text features": "ingest",
    "ALS fit": "split",
    "train": "ingest",
    "serve": "train",
    "numpy floor": "ingest",
}
#: ``train_report.json`` seconds -> metric.
TRAIN_PARTS = {
    "text_features": "train_text_s",
    "fold_stages": "train_fold_stages_s",
    "stage_full": "train_stage_full_s",
    "feature_weights": "train_weights_s",
    "ranker": "train_ranker_s",
}


class SkippedStageError(Exception):
    """A stage that did not run, or did not finish: the reason is the message."""


@dataclass
class Child:
    seconds: float
    peak_rss_mib: float
    stdout: str


def run_child(args: list[str], log_file: Path, timeout_s: float) -> Child:
    """``python -m llarapp ARGS`` in its own process group, its output to ``log_file`` (stdout
    also returned); wall time, and peak RSS: the highest ``VmHWM`` seen while it runs (polled;
    ``os.wait4``'s ``ru_maxrss`` would start from this process's size, which a child inherits
    through fork and exec). Killed at ``timeout_s``.

    Raises:
        SkippedStageError: it ran past ``timeout_s`` (then killed) or failed.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    out_file = log_file.with_suffix(".out")
    with open(out_file, "wb") as out, open(log_file, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "llarapp", *args], stdout=out, stderr=err,
            start_new_session=True,
        )  # fmt: skip
        peak_kib = 0
        while True:
            pid, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_kib = max(peak_kib, _hwm_kib(proc.pid))
            if time.perf_counter() - start > timeout_s:
                os.killpg(proc.pid, signal.SIGKILL)
                _, status, _ = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                raise SkippedStageError(f"stopped at the budget's end ({timeout_s / 60:.1f} min)")
            time.sleep(0.1)
        seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        tail = log_file.read_text(errors="replace")[-1500:]
        raise SkippedStageError(f"`llarapp {args[0]} {args[1]}` failed ({proc.returncode}): {tail}")
    return Child(seconds, peak_kib / 1024, out_file.read_text(errors="replace"))


def _hwm_kib(pid: int) -> int:
    """``VmHWM`` (peak resident set) of a running process in KiB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def smaps_rollup(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (private clean + dirty) of a process in MiB, from smaps_rollup."""
    kb: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        kb[name] = int(rest.split()[0])
    return {
        "rss_mib": round(kb["Rss"] / 1024, 1),
        "pss_mib": round(kb["Pss"] / 1024, 1),
        "uss_mib": round((kb["Private_Clean"] + kb["Private_Dirty"]) / 1024, 1),
    }


def numpy_floor_ms(n_tracks: int, k: int = 500, dim: int = 64, repeats: int = 30) -> float:
    """Median ms of one ``(1, dim) x (dim, n_tracks)`` float32 product + top-k argpartition."""
    rng = np.random.default_rng(0)
    items = rng.standard_normal((dim, n_tracks), dtype=np.float32)
    query = rng.standard_normal((1, dim), dtype=np.float32)
    k = min(k, n_tracks)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scores = (query @ items)[0]
        np.argpartition(-scores, k - 1)[:k]
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)


def fit_exponent(sizes: list[int], values: list[float]) -> tuple[float, float] | None:
    """``(a, b)`` of ``value = a * size ** b`` by least squares in log-log space; None with
    fewer than two sizes or a value that is not positive."""
    if len(sizes) < 2 or min(values) <= 0:
        return None
    b, log_a = np.polyfit(np.log(sizes), np.log(values), 1)
    return float(np.exp(log_a)), float(b)


def predict_seconds(measured: dict[int, float], n: int) -> float | None:
    """What a stage should take at ``n``, for the budget: from the largest measured size,
    growing at the fitted exponent but at least linearly. None when never measured."""
    if not measured:
        return None
    fit = fit_exponent(sorted(measured), [measured[s] for s in sorted(measured)])
    b = max(fit[1], 1.0) if fit else 1.0
    n0 = max(measured)
    return measured[n0] * (n / n0) ** b


def complete(metrics: dict[str, dict[int, float]], sizes: list[int]) -> dict:
    """Every metric's exponent (fitted on its measured sizes) and its value at every size:
    measured, else extrapolated from the fit (none when fewer than two sizes were measured)."""
    out = {}
    for key, label, unit, stage in METRICS:
        measured = metrics.get(key, {})
        known = sorted(measured)
        fit = fit_exponent(known, [measured[s] for s in known])
        values = {}
        for n in sizes:
            if n in measured:
                values[str(n)] = {"value": _round(measured[n]), "source": "measured"}
            elif fit is not None:
                values[str(n)] = {"value": _round(fit[0] * n ** fit[1]), "source": "extrapolated"}
        out[key] = {
            "label": label,
            "unit": unit,
            "stage": stage,
            "exponent": round(fit[1], 3) if fit else None,
            "fitted_on": known if fit else [],
            "values": values,
        }
    return out


def _round(x: float) -> float:
    return float(f"{x:.4g}")


class _SizeRun:
    """One size's stages in ``work``, within ``minutes``."""

    def __init__(self, n: int, work: Path, deadline: float, history: dict, settings: dict):
        self.n = n
        self.work = work
        self.deadline = deadline  # time.monotonic() at the budget's end
        self.history = history  # metric -> {size: value} of this and the smaller sizes
        self.settings = settings
        self.notes: dict[str, str] = {}
        self.done: set[str] = set()
        self.load: list[float] = []
        self.extra: dict = {}

    def record(self, key: str, value: float) -> None:
        self.history.setdefault(key, {})[self.n] = float(value)

    def stage(self, name: str, fn) -> None:
        """Run ``fn(timeout_s)`` unless its input is missing or it would not fit."""
        self.load.append(os.getloadavg()[0])
        need = NEEDS.get(name)
        if need is not None and need not in self.done:
            self.notes[name] = f"skipped: needs {need}"
            return
        left = self.deadline - time.monotonic()
        key = STAGE_TIME[name]
        measured = {s: v for s, v in self.history.get(key, {}).items() if s < self.n}
        predicted = predict_seconds(measured, self.n) if key else None
        if left <= 0 or (predicted is not None and predicted > left):
            guess = f" (predicted {predicted / 60:.1f} min)" if predicted is not None else ""
            self.notes[name] = f"skipped: over budget{guess}, {max(left, 0) / 60:.1f} min left"
            log.info("scale %d: %s %s", self.n, name, self.notes[name])
            return
        log.info("scale %d: %s (%.1f min left)", self.n, name, left / 60)
        try:
            fn(left)
        except SkippedStageError as exc:
            self.notes[name] = str(exc)
            log.warning("scale %d: %s: %s", self.n, name, exc)
            return
        self.done.add(name)

    def child(self, key: str, args: list[str], timeout_s: float) -> Child:
        """Run a CLI stage; record its wall (``KEY_s``) and peak RSS (``KEY_rss``)."""
        res = run_child(args, self.work / "logs" / f"{key}.log", timeout_s)
        self.record(f"{key}_s", res.seconds)
        self.record(f"{key}_rss", res.peak_rss_mib)
        return res

    # --- the stages -----------------------------------------------------------------------

    def synth(self, timeout_s: float) -> None:
        args = ["data", "synth", "--playlists", str(self.n), "--out", str(self.work / "synth")]
        self.child("synth", [*args, "--seed", str(self.settings["seed"])], timeout_s)

    def ingest(self, timeout_s: float) -> None:
        import pyarrow.parquet as pq

        from llarapp.data.schema import INTERACTIONS_FILE, PLAYLISTS_FILE, TRACKS_FILE

        data = self.work / "data"
        self.child("ingest", ["data", "ingest", "--mpd", str(self.work / "synth"),
                              "--out", str(data)], timeout_s)  # fmt: skip
        shutil.rmtree(self.work / "synth")  # 19 GB at 1 M playlists; the tables hold it all
        for key, name in (("playlists", PLAYLISTS_FILE), ("rows", INTERACTIONS_FILE),
                          ("tracks", TRACKS_FILE)):  # fmt: skip
            self.record(key, pq.ParquetFile(data / name).metadata.num_rows)

    def split(self, timeout_s: float) -> None:
        args = ["data", "split", "--data", str(self.work / "data"), "--out"]
        self.child("split", [*args, str(self.work / "split")], timeout_s)

    def text(self, timeout_s: float) -> None:
        """Texts embedded: the vectors new in the cache. A run stopped at the budget's end
        still gives its rate (its shards are on disk)."""
        from llarapp.text import default_cache_dir

        cache = default_cache_dir()
        before = set(cache.glob("emb-*.npz"))

        def embedded() -> int:
            count = 0
            for shard in set(cache.glob("emb-*.npz")) - before:
                with np.load(shard) as z:
                    count += len(z["keys"])
            return count

        args = ["features", "text", "--data", str(self.work / "data")]
        start = time.perf_counter()
        try:
            res = self.child("text", [*args, "--out", str(self.work / "text")], timeout_s)
        except SkippedStageError as exc:
            done = embedded()
            if done:
                self.record("texts_per_s", done / (time.perf_counter() - start))
            raise SkippedStageError(f"{exc}; {done:,} texts embedded by then") from exc
        counts = json.loads(res.stdout)
        self.record("texts", counts["tracks"] + counts["titles"])
        done = embedded()
        self.record("texts_embedded", done)
        if done:
            self.record("texts_per_s", done / res.seconds)

    def als(self, timeout_s: float) -> None:
        from llarapp.config import to_json
        from llarapp.training.llara import LlaraTrainConfig

        config = self.work / "als-config.json"
        config.write_text(json.dumps(to_json(LlaraTrainConfig().als)))
        args = ["features", "behavior", "--data", str(self.work / "data"), "--split"]
        args += [str(self.work / "split"), "--out", str(self.work / "als"), "--config", str(config)]
        self.child("als", args, timeout_s)

    def train(self, timeout_s: float) -> None:
        model = self.work / "model"
        args = ["train", "--data", str(self.work / "data"), "--out", str(model), "--work"]
        args += [str(self.work / "train-work"), "--seed", str(self.settings["seed"])]
        if self.settings["epochs"]:
            args += ["--epochs", str(self.settings["epochs"])]
        res = self.child("train", args, timeout_s)
        seconds = json.loads((model / "train_report.json").read_text())["seconds"]
        self.extra["train_seconds"] = seconds
        for part, key in TRAIN_PARTS.items():
            if part in seconds:
                self.record(key, seconds[part])
        self.record("train_rest_s", res.seconds - sum(seconds.get(p, 0.0) for p in TRAIN_PARTS))
        size = sum(f.stat().st_size for f in model.rglob("*") if f.is_file())
        self.record("model_mib", size / 2**20)

    def serve(self, timeout_s: float) -> None:
        import psutil

        from llarapp.benchmark.serving import build_requests
        from llarapp.serving.client import free_port, replay, stop_server, wait_ready

        s = self.settings
        start = time.perf_counter()
        bodies = build_requests(self.work / "data", self.work / "split", s["seeds"], s["k"])
        picks = np.random.default_rng(0).choice(len(bodies), s["requests"] + s["warmup"])
        encoded = [json.dumps(bodies[i]).encode() for i in picks]
        port = free_port()
        args = ["serve", "--model", str(self.work / "model"), "--port", str(port)]
        args += ["--events", str(self.work / "events.db"), "--workers", str(s["workers"])]
        with open(self.work / "logs" / "serve.log", "wb") as log_file:
            ready = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "llarapp", *args], stdout=log_file,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_ready(url, proc, timeout=timeout_s)
            except (RuntimeError, TimeoutError) as exc:
                raise SkippedStageError(f"the server did not start: {exc}") from exc
            self.record("server_start_s", time.perf_counter() - ready)
            replay(url, encoded[: s["warmup"]], 1)
            for c in (1, 8):
                run = replay(url, encoded[s["warmup"] :], c).summary()
                if run["errors"]:
                    raise SkippedStageError(f"{run['errors']} request(s) failed at concurrency {c}")
                self.record(f"c{c}_p50", run["p50_ms"])
                self.record(f"c{c}_p99", run["p99_ms"])
            workers = [
                {"pid": p.pid, **smaps_rollup(p.pid)}
                for p in psutil.Process(proc.pid).children()
                if "llarapp_kserve" in " ".join(p.cmdline())
            ] or [{"pid": proc.pid, **smaps_rollup(proc.pid)}]  # --workers 1: no supervisor
            supervisor = smaps_rollup(proc.pid) if workers[0]["pid"] != proc.pid else None
        finally:
            stop_server(proc)
        self.extra["workers"] = workers
        self.extra["supervisor"] = supervisor
        for key in ("rss", "pss", "uss"):
            self.record(f"worker_{key}", float(np.mean([w[f"{key}_mib"] for w in workers])))
        total = sum(w["pss_mib"] for w in workers) + (supervisor or {}).get("pss_mib", 0.0)
        self.record("server_pss", total)
        self.record("serve_s", time.perf_counter() - start)

    def floor(self, timeout_s: float) -> None:
        n_tracks = int(self.history["tracks"][self.n])
        self.record("floor_ms", numpy_floor_ms(n_tracks, self.settings["k"]))

    def steps(self) -> dict:
        """Every stage, in the order they run."""
        return {
            "synth": self.synth, "ingest": self.ingest, "split": self.split,
            "numpy floor": self.floor, "ALS fit": self.als, "text features": self.text,
            "train": self.train, "serve": self.serve,
        }  # fmt: skip

    def run(self) -> dict:
        self.work.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        for name, fn in self.steps().items():
            self.stage(name, fn)
        return self._result(start)

    def redo(self, names: list[str], before: dict) -> dict:
        """``names`` run again on an earlier run of this size (``before``), in its folder,
        whose other stages are taken as done; the rest of ``before`` is kept."""
        if not self.work.is_dir():
            raise ValueError(f"--redo: {self.work} is missing; --work must hold the earlier run")
        start = time.monotonic()
        self.done = set(STAGE_TIME) - set(names)
        for name, fn in self.steps().items():
            if name in names:
                self.stage(name, fn)
        now = self._result(start)
        redone = {"stages": names, "minutes": now["minutes"], "load": now["load"]}
        notes = {k: v for k, v in before.get("notes", {}).items() if k not in names}
        return {**before, **self.extra, "notes": {**notes, **self.notes}, "redone": redone}

    def _result(self, start: float) -> dict:
        self.load.append(os.getloadavg()[0])
        return {
            "minutes": round((time.monotonic() - start) / 60, 2),
            "notes": self.notes,
            "load": {"min": min(self.load), "max": max(self.load)},
            **self.extra,
        }


def run_scale_benchmark(
    sizes: list[int],
    out: Path | str,
    *,
    work_dir: Path | str = "runs/scale",
    max_minutes: float = 60.0,
    epochs: int | None = None,
    requests: int = 200,
    warmup: int = 20,
    seeds: int = 5,
    k: int = 500,
    workers: int = 2,
    seed: int = 0,
    chart: Path | str | None = None,
    reuse: Path | str | None = None,
    redo: tuple[str, ...] = (),
) -> dict:
    """Run the benchmark (see the module docstring), write ``out`` (and ``chart``).

    ``reuse``: an earlier result JSON of the same settings; its sizes are not run again, their
    measured values (and notes) are taken as they are. ``redo``: stages of those sizes run
    again all the same (after a change to what they measure), on the earlier run's folders in
    ``work_dir``; the run's ``redone`` says which, how long they took and under what load.

    Raises:
        ValueError: ``reuse`` was run with other settings; ``redo`` names an unknown stage, or
            a reused size's folder is not in ``work_dir``.
    """
    unknown = set(redo) - set(STAGE_TIME)
    if unknown:
        raise ValueError(
            f"--redo {', '.join(sorted(unknown))}: expected some of {list(STAGE_TIME)}"
        )
    sizes = sorted(set(sizes))
    settings = {
        "max_minutes": max_minutes, "epochs": epochs, "requests": requests, "warmup": warmup,
        "seeds": seeds, "k": k, "workers": workers, "seed": seed,
    }  # fmt: skip
    history: dict[str, dict[int, float]] = {}
    runs = _reused(reuse, sizes, settings, history) if reuse else {}
    load_start = os.getloadavg()
    deadline = time.monotonic() + max_minutes * 60
    for n in sizes:
        if str(n) in runs:
            if redo:
                size_run = _SizeRun(n, Path(work_dir) / str(n), deadline, history, settings)
                runs[str(n)] = size_run.redo(list(redo), runs[str(n)])
            continue
        work = Path(work_dir) / str(n)
        if work.exists():
            shutil.rmtree(work)
        runs[str(n)] = _SizeRun(n, work, deadline, history, settings).run()
        log.info("scale %d: done in %.1f min; %s", n, runs[str(n)]["minutes"], runs[str(n)])
    runs = {str(n): runs[str(n)] for n in sizes}
    result = {
        "sizes": sizes,
        "settings": settings,
        "machine": {
            "cpus": os.cpu_count(),
            "load": {"start": load_start, "end": os.getloadavg()},
        },
        "runs": runs,
        "metrics": complete(history, sizes),
    }
    if chart:
        from llarapp.evaluation.charts import scale_chart

        result["chart"] = str(scale_chart(result, chart))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    return result


def _reused(path: Path | str, sizes: list[int], settings: dict, history: dict) -> dict:
    """The runs of ``sizes`` in an earlier result, their measured values put in ``history``."""
    before = json.loads(Path(path).read_text())
    ours = {k: v for k, v in settings.items() if k != "max_minutes"}
    theirs = {k: v for k, v in before["settings"].items() if k != "max_minutes"}
    if ours != theirs:
        raise ValueError(f"--reuse {path}: run with {theirs}, not {ours}")
    runs = {}
    for n in sizes:
        if str(n) not in before["runs"]:
            continue
        runs[str(n)] = {**before["runs"][str(n)], "reused_from": str(path)}
        for key, metric in before["metrics"].items():
            entry = metric["values"].get(str(n))
            if entry and entry["source"] == "measured":
                history.setdefault(key, {})[n] = entry["value"]
    return runs


def _cell(entry: dict | None) -> str:
    if entry is None:
        return "—"
    v = entry["value"]
    text = f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return text if entry["source"] == "measured" else f"~{text} (extrapolated)"


def format_table(result: dict) -> str:
    """The growth table (one row a metric, one column a size, the fitted exponent), then why
    each skipped stage was skipped."""
    sizes = [str(n) for n in result["sizes"]]
    rows = [
        "| stage | unit | " + " | ".join(f"{int(n):,}" for n in sizes) + " | exponent |",
        "|---|---|" + "---:|" * (len(sizes) + 1),
    ]
    for m in result["metrics"].values():
        if not m["values"]:
            continue
        cells = [_cell(m["values"].get(n)) for n in sizes]
        exp = f"{m['exponent']:.2f}" if m["exponent"] is not None else "—"
        rows.append(f"| {m['label']} | {m['unit']} | " + " | ".join(cells) + f" | {exp} |")
    lines = ["\n".join(rows), ""]
    for n in sizes:
        run = result["runs"][n]
        lines.append(
            f"{int(n):,} playlists: {run['minutes']:.1f} min, load average "
            f"{run['load']['min']:.1f}-{run['load']['max']:.1f}"
        )
        lines += [f"  {stage}: {why}" for stage, why in run["notes"].items()]
    lines.append(
        "exponent: slope of log(value) on log(playlists) over the measured sizes; "
        "'extrapolated': value of that fit (no cell: fewer than two sizes measured)"
    )
    return "\n".join(lines)
