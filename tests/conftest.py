"""Shared fixtures: a private embedding cache, synthetic MPD data, an ingested + split copy."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` (pytest -n 2): a core each, no spinning
    os.environ.setdefault("LLARAPP_THREADS", "1")

#: the longest files first: `make test`'s workers take whole files in collection order, so the
#: closed loop's minutes start at once instead of last
FIRST = (
    "test_loop.py",
    "test_pipeline.py",
    "test_continuous.py",
    "test_benchmark_scale.py",
    "test_benchmark_api.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))  # stable: the rest as found


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep every test's embeddings out of the user's cache."""
    os.environ["LLARAPP_CACHE"] = str(tmp_path_factory.mktemp("llarapp-cache"))


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    from llarapp.data.synth import generate

    out = tmp_path_factory.mktemp("synth")
    generate(1200, out, seed=7, playlists_per_slice=400)
    return out


@pytest.fixture(scope="session")
def prepared(synth_dir, tmp_path_factory):
    """(data_dir, split_dir) of the synthetic set, ingested and split."""
    from llarapp.config import SplitConfig
    from llarapp.data.ingest import ingest
    from llarapp.data.split import split

    work = tmp_path_factory.mktemp("prepared")
    ingest(str(synth_dir), work / "data")
    split(work / "data", work / "split", SplitConfig(seed=3))
    return work / "data", work / "split"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """(data_dir, split_dir, model_dir, trained LlaraPP) on 60 synthetic playlists.

    Trained once per session (about a minute); tests that write must copy ``model_dir`` first.
    """
    from tiny_model import TINY

    from llarapp.config import SplitConfig
    from llarapp.data.ingest import ingest
    from llarapp.data.split import split
    from llarapp.data.synth import generate
    from llarapp.training.llara import train_llara

    work = tmp_path_factory.mktemp("llara")
    generate(60, work / "mpd", seed=5)
    ingest(str(work / "mpd"), work / "data")
    # distractors: their tracks stay unplayed in the refitted model's catalogue (cold tracks)
    split(work / "data", work / "split", SplitConfig(seed=1, distractor_frac=0.2))
    model = train_llara(
        work / "data",
        work / "split",
        work / "model",
        TINY,
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
    )
    return work / "data", work / "split", work / "model", model
