"""`llarapp loop` end to end on synthetic playlists: clean traffic (no alarm) -> drifted traffic
with feedback (alarm) -> the continuous pipeline retrains and starts a 10 % canary -> the
controller promotes -> a broken challenger is rolled back, the champion serving throughout."""

from __future__ import annotations

import json

import pytest
from tiny_model import TINY

from llarapp.cli import main


@pytest.mark.slow
@pytest.mark.integration
def test_the_loop_promotes_a_retrain_and_rolls_back_a_broken_challenger(tmp_path, capsys):
    out = tmp_path / "loop.json"
    tiny = json.dumps({**TINY.to_dict(), "epochs": 3})  # the champion's and its fine-tune's
    rc = main([
        "loop", "--out", str(out), "--work", str(tmp_path / "work"), "--quick",
        "--train-config", tiny, "--playlists", "800", "--window", "200",
        "--round-requests", "100", "--min-requests", "50", "--min-feedback", "30",
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["clean"]["drift"] is False and result["clean"]["retrain"] is False
    assert result["drifted"]["drift"] is True and result["drifted"]["retrain"] is True
    assert result["drifted"]["likes"] > 0 and result["drifted"]["dislikes"] > 0
    assert result["retrain"]["gate"]["passed"] is True and result["retrain"]["version"] == "2"
    canary = result["canary"]
    assert canary["percent"] == 10.0 and canary["requests"] >= 100
    assert 0.0 < canary["challenger_share"] < 0.3  # a sticky 10 % of distinct playlists
    assert result["promote"]["decision"] == "promote"
    assert result["promote"]["moved"]["champion"] == "2"  # the registry's alias moved
    bad = result["bad_challenger"]
    assert bad["decision"] == "rollback" and bad["champion"] == result["promote"]["champion"]
    assert set(bad["served_after"]) == {result["promote"]["champion"]}
    assert result["alarm_to_promoted_s"] > 0
    audit = (tmp_path / "work" / "serving" / "rollout.jsonl").read_text().splitlines()
    assert [json.loads(line)["action"] for line in audit] == ["promote", "rollback"]
