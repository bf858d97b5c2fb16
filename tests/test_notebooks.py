"""The notebooks in ``notebooks/`` run top to bottom on synthetic data (nbclient, a kernel of
this interpreter), each with its parameters cell pointed at the session's tiny data and model;
and they are stored without outputs (``nbstripout --verify``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
pytestmark = [pytest.mark.slow, pytest.mark.integration]


def run_notebook(name: str, cwd: Path, **params) -> None:
    """Execute ``notebooks/NAME.ipynb`` in ``cwd``, ``params`` assigned right after its
    parameters cell (as papermill injects them); a failing cell fails the test with its error."""
    import nbformat
    from nbclient import NotebookClient

    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    at = next(i for i, c in enumerate(book.cells) if "parameters" in c.metadata.get("tags", []))
    lines = [f"{k} = {v!r}" for k, v in params.items()]
    # the kernel must be this interpreter (with this checkout's library on its path)
    here = os.path.realpath(sys.executable)
    lines += ["import os, sys", f"assert os.path.realpath(sys.executable) == {here!r}"]
    book.cells.insert(at + 1, nbformat.v4.new_code_cell("\n".join(lines)))
    NotebookClient(
        book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()


def test_notebooks_are_stored_without_outputs():
    nbstripout = Path(sys.executable).with_name("nbstripout")
    books = sorted(str(p) for p in NOTEBOOKS.glob("*.ipynb"))
    assert len(books) == 4
    done = subprocess.run([str(nbstripout), "--verify", *books], capture_output=True, text=True)
    assert done.returncode == 0, (
        f"outputs stored; run `nbstripout notebooks/*.ipynb`:\n{done.stdout}"
    )


def test_01_explore_data(synth_dir, tmp_path):
    run_notebook("01-explore-data", tmp_path, MPD=str(synth_dir), WORK=str(tmp_path / "w"))
    assert (tmp_path / "w" / "split" / "cases.parquet").is_file()


def test_02_train_and_compare(tiny, tmp_path):
    mpd = tiny[0].parent / "mpd"  # the tiny model's 60 synthetic playlists
    models = ["most_popular", "als", "title_knn"]
    run_notebook("02-train-and-compare", tmp_path, MPD=str(mpd), MODELS=models, WORK="w")
    assert (tmp_path / "w" / "quality.json").is_file() and (
        tmp_path / "w" / "quality.png"
    ).is_file()


def test_03_query_the_graph(tiny, tmp_path):
    from llarapp.serving.store import read_feedback

    shutil.copytree(tiny[2], tmp_path / "model")
    events = tmp_path / "events.db"
    run_notebook("03-query-the-graph", tmp_path, MODEL="model", EVENTS=str(events), K=5)
    assert [r["liked"] for r in read_feedback(events)] == [1, 0]


def test_04_monitor(tiny, tmp_path):
    from llarapp.monitoring import write_reference
    from llarapp.pipeline.loop import broken_copy
    from llarapp.text import TextEncoder, default_cache_dir

    data_dir, split_dir, model_dir, _ = tiny
    shutil.copytree(model_dir, tmp_path / "model")
    write_reference(
        tmp_path / "model", data_dir, split_dir, TextEncoder(default_cache_dir()).encode
    )
    broken_copy(tmp_path / "model", tmp_path / "challenger")
    small = {"title_clusters": 4, "pca_components": 4}  # DriftConfig for 18 reference requests
    run_notebook("04-monitor", tmp_path, MODEL="model", CHALLENGER="challenger", REQUESTS=40,
                 DRIFT=small, EVENTS="events.db", WORK="w")  # fmt: skip
    assert (tmp_path / "w" / "drift" / "drift_report.html").is_file()
