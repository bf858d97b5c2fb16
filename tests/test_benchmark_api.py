"""``llarapp benchmark api``: ``llarapp train`` and ``llarapp serve`` run as a user runs them,
every test case answered over HTTP and scored beside baselines fitted on the same playlists."""

from __future__ import annotations

import json

import pytest

from llarapp.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_api_benchmark_trains_serves_and_scores_every_case_over_http(synth_dir, tmp_path, capsys):
    out, work = tmp_path / "api.json", tmp_path / "work"
    args = ["benchmark", "api", "--mpd", str(synth_dir), "--out", str(out)]
    args += ["--max-playlists", "300", "--epochs", "1", "--work-dir", str(work)]
    args += ["--baselines", "most_popular,als,title_knn"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| model |" in printed and "x overall" in printed and "title only / title_knn" in printed
    result = json.loads(out.read_text())
    models, dataset = result["models"], result["dataset"]
    assert list(models) == ["llara++", "most_popular", "als", "title_knn"]
    assert all(m["overall"]["cases"] == dataset["test_cases"] > 0 for m in models.values())
    # the served model fitted on every training playlist (its split run on part of them), and
    # the baselines on the same ones
    assert result["train"]["playlists"]["served"] == dataset["training_playlists"]
    assert result["train"]["playlists"]["split_run"] < dataset["training_playlists"]
    # the honest catalogue: at least as many unplayed distractor tracks as cold hidden ones
    assert dataset["distractor_tracks"] >= dataset["hidden_cold_tracks"] > 0
    assert models["llara++"]["overall"]["ndcg"] > models["most_popular"]["overall"]["ndcg"]
    ratios = result["ratios"]
    assert set(ratios["categories"]) == set(models["llara++"]["categories"])
    best = ratios["best_baseline"]
    expected = models["llara++"]["overall"]["ndcg"] / models[best]["overall"]["ndcg"]
    assert ratios["overall"] == pytest.approx(expected, abs=1e-4)
    # every case was one request the server answered (its access log says so)
    access = [
        json.loads(line)
        for line in (work / "serve.log").read_text().splitlines()
        if line.startswith("{") and '"event": "recommend"' in line
    ]
    assert len(access) == dataset["test_cases"]
    assert {a["status"] for a in access} == {200}
