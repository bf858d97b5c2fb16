"""The command line: help everywhere, clear errors, and the quality benchmark end to end."""

from __future__ import annotations

import argparse
import json

import pytest

from llarapp.cli import build_parser, main
from llarapp.data.split import CATEGORY_NAMES

HEADLINE = {"r_precision", "ndcg", "clicks", "recall@500"}


def _commands(parser: argparse.ArgumentParser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _commands(sub, (*prefix, name))


def test_every_subcommand_has_help(capsys):
    commands = list(_commands(build_parser()))
    assert ("benchmark", "quality") in commands and ("data", "synth") in commands
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: llarapp" in capsys.readouterr().out


def test_missing_input_is_a_clear_error(tmp_path, capsys):
    assert main(["data", "ingest", "--mpd", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llarapp: error:") and "nope" in err


def test_bad_arguments_exit_nonzero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "--playlists", "0", "--out", "x"])
    assert exit_info.value.code == 2
    assert "expected an integer >= 1" in capsys.readouterr().err


@pytest.mark.integration
def test_quality_benchmark_end_to_end(synth_dir, tmp_path, capsys):
    out = tmp_path / "quality.json"
    baselines = "most_popular,item_knn,als,title_knn"
    args = [
        "benchmark",
        "quality",
        "--mpd",
        str(synth_dir),
        "--out",
        str(out),
        "--models",
        baselines,
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| model |" in printed and "ndcg per category" in printed
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"  # the chart beside the JSON
    result = json.loads(out.read_text())
    assert set(result) == {"dataset", "models", "seconds"}
    assert result["dataset"]["playlists"] == 1200 and result["dataset"]["test_cases"] > 0
    assert set(result["models"]) == {"most_popular", "item_knn", "als", "title_knn"}
    for r in result["models"].values():
        assert set(r["overall"]) >= HEADLINE
        assert set(r["categories"]) == set(CATEGORY_NAMES)
        assert all(set(c) >= HEADLINE for c in r["categories"].values())
    assert {"ingest", "split", "fit:als", "evaluate:als"} <= set(result["seconds"])
    # the harness is sane: behaviour and text both beat popularity where they should
    m = result["models"]
    assert m["als"]["overall"]["ndcg"] > m["most_popular"]["overall"]["ndcg"]
    assert m["item_knn"]["overall"]["ndcg"] > m["most_popular"]["overall"]["ndcg"]
    title_only = {name: r["categories"]["title_only"]["ndcg"] for name, r in m.items()}
    assert title_only["title_knn"] > title_only["most_popular"]
    assert m["most_popular"]["cold"]["recall@500"] == 0.0  # cannot know unseen tracks


def test_serve_without_model_serves_what_was_deployed_or_says_how(tmp_path, monkeypatch, capsys):
    """After `make demo`, `llarapp serve` serves the deployed model; with nothing to serve it
    says what to do instead of a traceback."""
    from llarapp.cli import default_serving_model
    from llarapp.pipeline.deploy import POINTER, write_pointer

    monkeypatch.chdir(tmp_path)
    assert main(["serve"]) == 2
    assert "no model to serve" in capsys.readouterr().err
    (tmp_path / "runs" / "model").mkdir(parents=True)
    assert default_serving_model() == "runs/model"
    exported = tmp_path / "runs" / "demo" / "exported"
    write_pointer(tmp_path / "runs" / "serving", POINTER, {"storage_uri": str(exported)})
    assert default_serving_model() == str(exported)  # the deploy pointer comes first
