"""Monitoring: request windows, the drift decision, the Evidently report, ``benchmark drift``.

Synthetic data only (``synth_dir``), split as ``llarapp benchmark drift`` splits (30 %
validation, 30 % test): the reference is the validation cases as ``/v1/recommend`` bodies,
current windows are drawn from the test cases (then changed by one
drift kind from :mod:`llarapp.benchmark.drift`). Every draw is seeded, so each verdict is the
same on every run.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from llarapp.benchmark.drift import (
    KINDS,
    fewer_seeds,
    language,
    new_releases,
    scenes,
)
from llarapp.config import SplitConfig
from llarapp.data.dataset import load_cases, load_train
from llarapp.data.ingest import ingest
from llarapp.data.split import split as make_split
from llarapp.monitoring import (
    Catalogue,
    DriftConfig,
    Reference,
    Window,
    check_drift,
    embedding_drift,
    window_from_bodies,
    window_from_log,
    write_report,
)
from llarapp.serving.request import request_body
from llarapp.serving.store import EventStore
from llarapp.text import TextEncoder, default_cache_dir

WINDOW = 80


@pytest.fixture(scope="module")
def traffic(synth_dir, tmp_path_factory):
    """(catalogue, encode, reference bodies, test cases, scene of each test playlist)."""
    work = tmp_path_factory.mktemp("drift")
    data, split = work / "data", work / "split"
    ingest(str(synth_dir), data)
    make_split(data, split, SplitConfig(seed=3, valid_frac=0.3, test_frac=0.3))
    train = load_train(data, split)
    counts = np.asarray(train.matrix.sum(axis=0)).ravel()
    catalogue = Catalogue(dict(zip(train.track_uris.tolist(), counts.tolist(), strict=True)))
    encode = TextEncoder(default_cache_dir()).encode
    reference = [request_body(ec.case, 50) for ec in load_cases(data, split, "valid")]
    pool = load_cases(data, split, "test")
    return catalogue, encode, reference, pool, scenes(data, split, seed=0)


@pytest.fixture(scope="module")
def reference(traffic):
    catalogue, encode, bodies, _, _ = traffic
    return Reference.of(window_from_bodies(bodies, catalogue, encode))


def _window(traffic, rng, change=None, scene=None) -> Window:
    catalogue, encode, _, pool, scene_of = traffic
    cases = [ec for ec in pool if scene is None or scene_of[ec.case.pid] == scene]
    picked = [cases[i] for i in rng.choice(len(cases), WINDOW, replace=len(cases) < WINDOW)]
    bodies = [request_body(ec.case, 50) for ec in picked]
    return window_from_bodies(change(bodies, rng) if change else bodies, catalogue, encode)


def test_undrifted_windows_pass(traffic, reference):
    rng = np.random.default_rng(0)
    for _ in range(3):
        result = check_drift(reference, _window(traffic, rng))
        assert not result.drifted, result.to_dict()
        assert {c.column for c in result.columns} == {
            "n_seeds", "unknown_share", "seed_popularity", "title_only", "title_cluster",
            "title_vector",
        }  # fmt: skip


@pytest.mark.parametrize(
    ("change", "columns"),
    [
        (new_releases, {"unknown_share"}),
        (language, {"title_cluster", "title_vector"}),
        (fewer_seeds, {"n_seeds"}),
    ],
)
def test_each_changed_window_is_detected_by_its_column(traffic, reference, change, columns):
    rng = np.random.default_rng(1)
    result = check_drift(reference, _window(traffic, rng, change))
    assert result.drifted
    assert columns & set(result.to_dict()["drifted_columns"])


def test_a_scene_taking_the_whole_window_is_detected(traffic, reference):
    scene_of = traffic[4]
    biggest = pd.Series(scene_of).value_counts().index[0]
    result = check_drift(reference, _window(traffic, np.random.default_rng(2), scene=biggest))
    assert result.drifted
    assert {"title_cluster", "title_vector"} & set(result.to_dict()["drifted_columns"])


def test_embeddings_drift_method_called_directly(traffic, reference):
    """The Evidently embedding method on the raw vectors (its own PCA) and through the
    reference's fitted PCA agree: foreign titles drift, a window of the same traffic does not.
    (The two PCAs differ in the last digits, which moves the SGD classifier's AUC a little.)"""
    rng = np.random.default_rng(3)
    all_foreign = lambda bodies, _rng: [  # noqa: E731
        {**b, "name": "canciones para el verano"} if b.get("name") else b for b in bodies
    ]
    ref = reference.window.vectors
    same, foreign = _window(traffic, rng), _window(traffic, rng, all_foreign)
    assert not embedding_drift(ref, same.vectors).drifted
    direct = embedding_drift(ref, foreign.vectors)
    assert direct.drifted and direct.method == "model" and direct.score > 0.6
    hoisted = check_drift(reference, foreign).columns[-1]
    assert hoisted.column == "title_vector" and hoisted.drifted
    assert hoisted.score == pytest.approx(direct.score, abs=0.05)


def test_bad_input_is_a_clear_error(tmp_path, traffic, reference):
    catalogue, encode, bodies, _, _ = traffic
    with pytest.raises(ValueError, match="empty"):
        window_from_bodies([], catalogue, encode)
    with pytest.raises(ValueError, match=r"bodies\[1\]: .*nothing to recommend"):
        window_from_bodies([bodies[0], {"k": 5}], catalogue, encode)
    frame = reference.window.frame.iloc[:4]
    with pytest.raises(ValueError, match=r"shape \(4, 10\); expected \(4, 384\)"):
        Window(frame, np.zeros((4, 10), dtype=np.float32))
    with pytest.raises(ValueError, match="same dim"):
        embedding_drift(reference.window.vectors, np.zeros((4, 10), dtype=np.float32))
    with pytest.raises(ValueError, match="at least 32"):
        Reference.of(Window(frame, reference.window.vectors[:4]))
    with pytest.raises(FileNotFoundError, match=r"arrays\.npz"):
        Catalogue.from_model(tmp_path)


def test_window_from_the_request_log(tmp_path, traffic):
    catalogue, encode, _, _, _ = traffic
    known = next(iter(catalogue.popularity))
    store = EventStore(tmp_path / "events.db", sample_rate=1.0)
    rows = [
        {"title": "summer", "n_seeds": 0, "n_known": 0, "n_unknown": 0, "seed_uris": []},
        {"title": None, "n_seeds": 4, "n_known": 3, "n_unknown": 1,
         "seed_uris": [known, "spotify:track:new"]},
    ]  # fmt: skip
    for i, row in enumerate(rows):
        assert store.maybe_log_request({"request_id": str(i), "model_version": "v1", **row})
    store.close()
    window = window_from_log(tmp_path / "events.db", catalogue, encode)
    frame = window.frame
    assert frame["n_seeds"].tolist() == [0, 4]
    assert frame["unknown_share"].tolist() == [0.0, 0.25]
    assert frame["title_only"].tolist() == [1, 0]
    assert np.isnan(frame["seed_popularity"][0])
    assert frame["seed_popularity"][1] == pytest.approx(np.log1p(catalogue.popularity[known]))
    assert frame["title"].tolist() == ["summer", ""]
    assert window.vectors.shape == (2, 384)
    assert len(window_from_log(tmp_path / "events.db", catalogue, encode, last=1)) == 1
    with pytest.raises(ValueError, match="no logged request matches"):
        window_from_log(tmp_path / "events.db", catalogue, encode, model_version="v2")
    saved = Window.load(window.save(tmp_path / "profile"))
    pd.testing.assert_frame_equal(saved.frame, window.frame)
    np.testing.assert_array_equal(saved.vectors, window.vectors)


def test_report_html_and_json_are_written(tmp_path, traffic, reference):
    current = _window(traffic, np.random.default_rng(4), new_releases)
    small = Window(reference.window.frame.iloc[:60], reference.window.vectors[:60])
    result = write_report(small, current, tmp_path / "report", DriftConfig(title_clusters=8))
    html = (tmp_path / "report" / "drift_report.html").read_text()
    assert "<html" in html.lower()
    metrics = json.loads((tmp_path / "report" / "drift_report.json").read_text())["metrics"]
    names = [m["metric_name"] for m in metrics]
    assert any(n.startswith("EmbeddingsDrift(") for n in names)
    assert any("column=title_cluster" in n for n in names)
    decision = json.loads((tmp_path / "report" / "drift.json").read_text())
    assert decision == result.to_dict() and decision["drift"]
    assert "unknown_share" in decision["drifted_columns"]


def test_benchmark_drift_command(tmp_path, synth_dir, capsys):
    from llarapp.cli import main

    out = tmp_path / "drift.json"
    argv = ["benchmark", "drift", "--mpd", str(synth_dir), "--out", str(out), "--windows", "2",
            "--window-sizes", "40,60", "--default-window", "60"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["windows"] == 2 and result["window_sizes"] == [40, 60]
    assert result["default_window"] == 60
    assert set(result["false_alarm"]) == {"40", "60"}
    assert set(result["detection"]) == set(KINDS)
    assert all(set(by_size) == {"40", "60"} for by_size in result["detection"].values())
    assert result["false_alarm"]["60"] == 0.0
    assert result["detection"]["new_releases"]["60"] == 1.0
    assert result["detection"]["seeds_per_request"]["60"] == 1.0
    table = capsys.readouterr().out
    assert "false alarm" in table and "detect language" in table


def test_monitor_profile_and_check_commands(tmp_path, traffic, capsys):
    """``llarapp monitor profile`` from request bodies, ``monitor check`` on the request log."""
    from llarapp.cli import main

    catalogue, _, bodies, pool, _ = traffic
    model = tmp_path / "model"  # the catalogue arrays monitoring reads from a MODEL_DIR
    model.mkdir()
    uris = np.array(sorted(catalogue.popularity))
    np.savez(model / "arrays.npz", track_uris=uris,
             popularity=np.array([catalogue.popularity[u] for u in uris]))  # fmt: skip
    requests = tmp_path / "reference.jsonl"
    requests.write_text("\n".join(json.dumps(b) for b in bodies) + "\n")
    profile = tmp_path / "profile"
    assert main(["monitor", "profile", "--model", str(model), "--requests", str(requests),
                 "--out", str(profile)]) == 0  # fmt: skip
    assert len(Window.load(profile)) == len(bodies)

    rng = np.random.default_rng(5)
    served = new_releases([request_body(ec.case, 50) for ec in pool[:WINDOW]], rng)
    store = EventStore(tmp_path / "events.db", sample_rate=1.0)
    for i, body in enumerate(served):
        seeds = [t["track_uri"] for t in body["tracks"]]
        unknown = sum(u not in catalogue.popularity for u in seeds)
        store.maybe_log_request({
            "request_id": str(i), "title": body.get("name"), "n_seeds": len(seeds),
            "n_known": len(seeds) - unknown, "n_unknown": unknown, "seed_uris": seeds,
        })  # fmt: skip
    store.close()
    out = tmp_path / "check"
    assert main(["monitor", "check", "--model", str(model), "--profile", str(profile),
                 "--log", str(tmp_path / "events.db"), "--last", str(WINDOW),
                 "--out", str(out)]) == 0  # fmt: skip
    decision = json.loads((out / "drift.json").read_text())
    assert decision["drift"] and decision["current_rows"] == WINDOW
    assert "unknown_share" in decision["drifted_columns"]
    assert (out / "drift_report.html").is_file()
    assert '"drift": true' in capsys.readouterr().out


@pytest.mark.integration
def test_training_writes_the_reference_that_monitor_check_defaults_to(prepared, tmp_path, capsys):
    """The held-out cases of the training split become MODEL/reference; `llarapp monitor check`
    reads it when no --profile is given."""
    from llarapp.cli import main
    from llarapp.data.dataset import load_cases, load_train
    from llarapp.monitoring import REFERENCE_DIR, write_reference
    from llarapp.text import TextEncoder, default_cache_dir

    data, split = prepared
    model_dir = tmp_path / "model"  # the catalogue arrays monitoring reads from a MODEL_DIR
    model_dir.mkdir()
    train = load_train(data, split)
    popularity = np.asarray(train.matrix.sum(axis=0)).ravel()
    np.savez(model_dir / "arrays.npz", track_uris=train.track_uris.astype(str),
             popularity=popularity)  # fmt: skip
    held = [*load_cases(data, split, "valid"), *load_cases(data, split, "test")]
    reference = write_reference(model_dir, data, split, TextEncoder(default_cache_dir()).encode)
    assert len(reference) == len(held) == len(Window.load(model_dir / REFERENCE_DIR))
    store = EventStore(tmp_path / "events.db", sample_rate=1.0)
    for i, ec in enumerate(held[:WINDOW]):  # the same traffic, served and logged
        seeds = [t.track_uri for t in ec.case.seeds]
        known = sum(u in set(train.track_uris) for u in seeds)
        store.maybe_log_request({"request_id": str(i), "title": ec.case.title,
                                 "n_seeds": len(seeds), "n_known": known,
                                 "n_unknown": len(seeds) - known, "seed_uris": seeds})  # fmt: skip
    store.close()
    out = tmp_path / "check"
    argv = ["monitor", "check", "--model", str(model_dir), "--log", str(tmp_path / "events.db"),
            "--last", str(WINDOW), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    decision = json.loads((out / "drift.json").read_text())
    assert decision["reference_rows"] == len(held) and decision["current_rows"] == WINDOW
