"""``llarapp benchmark scale``: exponent fits, extrapolation labels, and a tiny run end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llarapp.benchmark import scale


def test_fit_exponent_and_budget_prediction() -> None:
    sizes = [100, 1_000, 10_000]
    a, b = scale.fit_exponent(sizes, [3.0 * n**0.7 for n in sizes])
    assert a == pytest.approx(3.0) and b == pytest.approx(0.7)
    assert scale.fit_exponent([100], [5.0]) is None
    assert scale.fit_exponent([100, 200], [0.0, 1.0]) is None
    # The budget predicts at least linear growth from the largest measured size.
    assert scale.predict_seconds({}, 1000) is None
    assert scale.predict_seconds({100: 2.0}, 1000) == pytest.approx(20.0)
    assert scale.predict_seconds({100: 1.0, 1000: 1.1}, 10_000) == pytest.approx(11.0)
    assert scale.predict_seconds({100: 1.0, 1000: 100.0}, 10_000) == pytest.approx(10_000.0)


def test_complete_labels_extrapolated_values_and_the_table_says_so() -> None:
    history = {"synth_s": {100: 1.0, 1_000: 10.0}, "floor_ms": {100: 0.5}}
    metrics = scale.complete(history, [100, 1_000, 10_000])
    synth = metrics["synth_s"]
    assert synth["exponent"] == pytest.approx(1.0) and synth["fitted_on"] == [100, 1_000]
    assert synth["values"]["1000"] == {"value": 10.0, "source": "measured"}
    assert synth["values"]["10000"]["source"] == "extrapolated"
    assert synth["values"]["10000"]["value"] == pytest.approx(100.0)
    # One measured size: no exponent, nothing extrapolated; never measured: no row.
    assert metrics["floor_ms"]["exponent"] is None and list(metrics["floor_ms"]["values"]) == [
        "100"
    ]
    assert metrics["train_s"]["values"] == {}
    runs = {str(n): {"minutes": 0.1, "notes": {}, "load": {"min": 1.0, "max": 2.0}}
            for n in (100, 1_000, 10_000)}  # fmt: skip
    runs["10000"]["notes"] = {"synth": "skipped: over budget (predicted 9.0 min), 1.0 min left"}
    table = scale.format_table({"sizes": [100, 1_000, 10_000], "runs": runs, "metrics": metrics})
    assert "| synth: wall | s | 1 | 10 | ~100 (extrapolated) | 1.00 |" in table
    assert "| numpy floor (1x64 @ 64xN + top k) | ms | 0.5 | — | — | — |" in table
    assert "train: wall" not in table
    assert "synth: skipped: over budget" in table


def test_worker_memory_and_numpy_floor() -> None:
    mem = scale.smaps_rollup(os.getpid())
    assert 0 < mem["uss_mib"] <= mem["rss_mib"] and 0 < mem["pss_mib"] <= mem["rss_mib"]
    assert 0 < scale.numpy_floor_ms(20_000, k=500, repeats=5) < 1_000


@pytest.mark.slow
@pytest.mark.integration
def test_scale_benchmark_end_to_end(tmp_path: Path) -> None:
    # A tiny size measured through the CLI (synth, ingest, split, floor, ALS, text features,
    # train, two server workers, requests); the next, 33x larger, only where at least linear
    # growth fits the budget (on this machine text features and train do not; what is skipped
    # is asserted from the run's own notes, never from timings); a third far over: extrapolated.
    out, chart = tmp_path / "scale.json", tmp_path / "scale.png"
    args = ["benchmark", "scale", "--sizes", "60,2000,5000000", "--max-minutes", "9"]
    args += ["--work", str(tmp_path / "work"), "--out", str(out), "--chart", str(chart)]
    args += ["--epochs", "1", "--requests", "10"]
    done = subprocess.run(
        [sys.executable, "-m", "llarapp", *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["sizes"] == [60, 2000, 5_000_000] and chart.stat().st_size > 10_000
    runs = result["runs"]
    assert runs["60"]["notes"] == {}, runs["60"]["notes"]
    assert len(runs["60"]["workers"]) == 2 and runs["60"]["supervisor"]["pss_mib"] > 0
    skipped = runs["2000"]["notes"]
    assert set(skipped) <= {"text features", "train", "serve"}
    assert all(why.startswith(("skipped: over budget (predicted", "skipped: needs ")) for why in
               skipped.values())  # fmt: skip
    if "train" in skipped:
        assert skipped["serve"] == "skipped: needs train"
    big = runs["5000000"]["notes"]
    assert big["synth"].startswith("skipped: over budget") and big["train"] == (
        "skipped: needs ingest"
    )
    metrics = result["metrics"]
    for key in ("synth_s", "synth_rss", "ingest_s", "tracks", "floor_ms", "als_s"):
        m = metrics[key]
        assert [m["values"][n]["source"] for n in ("60", "2000")] == ["measured"] * 2, key
        assert m["values"]["5000000"]["source"] == "extrapolated"
        assert m["fitted_on"] == [60, 2000] and np.isfinite(m["exponent"])
        a, b = scale.fit_exponent([60, 2000], [m["values"][n]["value"] for n in ("60", "2000")])
        assert m["values"]["5000000"]["value"] == pytest.approx(a * 5e6**b, rel=1e-2)
    # Measured once: no exponent, no extrapolation; measured twice: fitted.
    for key in ("train_s", "train_ranker_s", "model_mib", "worker_uss", "server_pss", "c8_p99"):
        if "train" in skipped:
            assert list(metrics[key]["values"]) == ["60"] and metrics[key]["exponent"] is None
        else:
            assert metrics[key]["fitted_on"] == [60, 2000], key
    assert metrics["playlists"]["values"]["2000"]["value"] == 2000
    assert 50 < metrics["synth_rss"]["values"]["60"]["value"] < 1000
    assert "~" in done.stdout and "(extrapolated)" in done.stdout
    assert "| stage | unit | 60 | 2,000 | 5,000,000 | exponent |" in done.stdout


def test_reuse_takes_measured_values_of_an_earlier_run(tmp_path: Path) -> None:
    settings = {"max_minutes": 5, "epochs": 1, "requests": 10, "warmup": 20, "seeds": 5,
                "k": 500, "workers": 2, "seed": 0}  # fmt: skip
    metrics = scale.complete({"synth_s": {100: 1.0, 1_000: 10.0}}, [100, 1_000, 10_000])
    runs = {str(n): {"minutes": 1.0, "notes": {}, "load": {"min": 1, "max": 1}}
            for n in (100, 1_000, 10_000)}  # fmt: skip
    before = tmp_path / "before.json"
    before.write_text(json.dumps({"settings": settings, "runs": runs, "metrics": metrics}))
    history: dict = {}
    reused = scale._reused(before, [1_000, 10_000, 50_000], {**settings, "max_minutes": 9}, history)
    assert set(reused) == {"1000", "10000"} and reused["1000"]["reused_from"] == str(before)
    assert history == {"synth_s": {1_000: 10.0}}  # extrapolated values are not taken
    with pytest.raises(ValueError, match="--reuse"):
        scale._reused(before, [1_000], {**settings, "epochs": 2}, {})


def test_redo_runs_stages_of_a_reused_size_again_on_its_folder(tmp_path: Path) -> None:
    settings = {"epochs": 1, "requests": 10, "warmup": 20, "seeds": 5, "k": 500, "workers": 2,
                "seed": 0}  # fmt: skip
    metrics = scale.complete({"tracks": {1_000: 3_000.0}, "floor_ms": {1_000: 99.0}}, [1_000])
    runs = {"1000": {"minutes": 1.0, "notes": {"serve": "skipped: needs train"},
                     "load": {"min": 1, "max": 1}}}  # fmt: skip
    before = tmp_path / "before.json"
    before.write_text(json.dumps({"settings": settings, "runs": runs, "metrics": metrics}))
    kwargs = {**settings, "work_dir": tmp_path / "work", "reuse": before}
    with pytest.raises(ValueError, match="missing"):  # the earlier run's folder is needed
        scale.run_scale_benchmark([1_000], tmp_path / "a.json", redo=("numpy floor",), **kwargs)
    with pytest.raises(ValueError, match="--redo dance"):
        scale.run_scale_benchmark([1_000], tmp_path / "a.json", redo=("dance",), **kwargs)
    (tmp_path / "work" / "1000").mkdir(parents=True)
    result = scale.run_scale_benchmark(
        [1_000], tmp_path / "b.json", redo=("numpy floor",), **kwargs
    )
    run = result["runs"]["1000"]
    assert run["redone"]["stages"] == ["numpy floor"] and run["reused_from"] == str(before)
    assert run["notes"] == {"serve": "skipped: needs train"}  # what was not redone stays
    floor = result["metrics"]["floor_ms"]["values"]["1000"]
    assert floor["source"] == "measured" and floor["value"] != 99.0  # measured again
