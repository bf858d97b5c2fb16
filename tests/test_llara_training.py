"""LLaRA++ training on tiny synthetic data: projector, retriever, curriculum, save/load, cold."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from llarapp.config import ALSConfig, SplitConfig
from llarapp.data.dataset import Case, Track, load_cases
from llarapp.data.ingest import ingest
from llarapp.data.split import split
from llarapp.data.synth import generate
from llarapp.models.base import Recommender
from llarapp.models.projector import ProjectorConfig, fit_projector
from llarapp.models.retriever import FEATURES, Retriever
from llarapp.training.llara import LlaraTrainConfig, p_hybrid, train_llara

TINY = LlaraTrainConfig(
    als=ALSConfig(factors=8, iterations=5),
    projector=ProjectorConfig(hidden=32, epochs=3),
    n_candidates=120,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    epochs=2,
    batch_size=16,
    max_valid_cases=40,
    hard_negatives=24,
    random_negatives=8,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(data_dir, split_dir, model_dir, trained model) on 60 synthetic playlists."""
    work = tmp_path_factory.mktemp("llara")
    generate(60, work / "mpd", seed=5)
    ingest(str(work / "mpd"), work / "data")
    split(work / "data", work / "split", SplitConfig(seed=1))
    model = train_llara(
        work / "data",
        work / "split",
        work / "model",
        TINY,
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
    )
    return work / "data", work / "split", work / "model", model


def test_curriculum_schedule_rises_from_text_only_to_hybrid():
    values = [p_hybrid("linear", s, 100) for s in range(0, 101, 10)]
    assert values[0] == 0.0 and values[-1] == 1.0
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert p_hybrid("none", 0, 100) == 1.0 and p_hybrid("text-only", 100, 100) == 0.0
    with pytest.raises(ValueError, match="curriculum='sometimes'"):
        LlaraTrainConfig(curriculum="sometimes")


def test_projector_learns_a_linear_map_better_than_the_mean():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(600, 16)).astype(np.float32)
    behavior = (text @ rng.normal(size=(16, 4))).astype(np.float32)
    _, report = fit_projector(
        text, behavior, config=ProjectorConfig(hidden=32, epochs=40, batch_size=64)
    )
    assert report["held_out_fit"]["cosine"] > 0.9
    assert report["held_out_fit"]["r2"] > report["mean_vector_fit"]["r2"] + 0.2


def test_retriever_fuses_sources_excludes_seeds_and_falls_back_to_popularity():
    rng = np.random.default_rng(1)
    behavior = rng.normal(size=(50, 4)).astype(np.float32)
    playlists = sp.random(30, 40, density=0.2, format="csr", random_state=2)
    playlists.data[:] = 1
    popularity = np.concatenate([np.asarray(playlists.sum(0)).ravel(), np.zeros(10)])
    r = Retriever(behavior, popularity == 0, popularity, playlists.T.tocsr(), n_candidates=20)
    query = behavior[3] * 5
    got = r.retrieve(query, None, np.array([3]), np.array([3]))
    assert len(got.candidates) == 20 and 3 not in got.candidates
    assert got.features.shape == (20, len(FEATURES))
    best = np.argsort(-(behavior @ query))
    assert best[1] in got.candidates  # the nearest non-seed item is retrieved
    empty = r.retrieve(None, None, np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert list(empty.candidates) == list(np.argsort(-popularity, kind="stable")[:20])


@pytest.mark.integration
def test_training_saves_a_model_that_loads_with_identical_scores(tiny):
    data, split_dir, model_dir, model = tiny
    report = model.report
    assert report["train_cases"] > 0 and 0 < report["retriever_recall_valid"] <= 1
    assert (model_dir / "ranker" / "config.json").is_file()
    loaded = Recommender.load(model_dir)
    assert loaded.name == "llara++"
    for ec in load_cases(data, split_dir, "test")[:5]:
        assert loaded.recommend(ec.case, 50) == model.recommend(ec.case, 50)


@pytest.mark.integration
def test_cold_and_unknown_tracks(tiny):
    *_, model = tiny
    stage = model.stage
    cold_uri = stage.catalog.uris[stage.n_warm]  # cold tracks follow the warm ones
    unknown = Track("Brand New Song", "Nobody Yet")  # no URI: text only
    recs = model.recommend(Case(title="chill", seeds=(Track("x", "y", cold_uri), unknown)), 40)
    assert len(recs) == 40 == len(set(recs)) and cold_uri not in recs
    assert len(model.recommend(Case(title=None), 10)) == 10  # nothing at all: popularity
    all_recs = {
        u
        for ec in range(3)
        for u in model.recommend(Case(title=["rock", "jazz", "chill"][ec]), 200)
    }
    assert all_recs & set(stage.catalog.uris[stage.n_warm :].tolist()), "cold tracks reachable"


@pytest.mark.integration
def test_training_is_deterministic_under_a_seed(tiny, tmp_path):
    data, split_dir, _, model = tiny
    again = train_llara(
        data, split_dir, tmp_path / "again", TINY, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}"
    )
    case = load_cases(data, split_dir, "test")[0].case
    assert again.recommend(case, 30) == model.recommend(case, 30)
