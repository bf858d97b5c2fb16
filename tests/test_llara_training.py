"""LLaRA++ training on tiny synthetic data: projector, retriever, curriculum, save/load, cold."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from tiny_model import TINY

from llarapp.data.dataset import Case, Track, load_cases, load_train
from llarapp.models.base import Recommender
from llarapp.models.projector import ProjectorConfig, fit_projector
from llarapp.models.retriever import FEATURES, Retriever
from llarapp.training.llara import (
    LlaraTrainConfig,
    _fold_batches,
    p_hybrid,
    train_llara,
)


def test_curriculum_schedule_rises_from_text_only_to_hybrid():
    values = [p_hybrid("linear", s, 100) for s in range(0, 101, 10)]
    assert values[0] == 0.0 and values[-1] == 1.0
    assert all(a <= b for a, b in itertools.pairwise(values))
    assert p_hybrid("none", 0, 100) == 1.0 and p_hybrid("text-only", 100, 100) == 0.0
    with pytest.raises(ValueError, match="curriculum='sometimes'"):
        LlaraTrainConfig(curriculum="sometimes")
    with pytest.raises(ValueError, match=r"rank_folds=5 x rank_share=0\.25 > 1"):
        LlaraTrainConfig(rank_folds=5)  # the folds are disjoint shares of the playlists


def test_an_epoch_batches_each_fold_apart_and_every_case_once():
    folds = np.repeat([0, 1, 2, 3], [40, 33, 7, 40])
    batches = _fold_batches(folds, 16, np.random.default_rng(0))
    assert all((folds[rows] == fold).all() for fold, rows in batches)  # one fold stage each
    seen = np.concatenate([rows for _, rows in batches])
    assert sorted(seen.tolist()) == list(range(len(folds)))
    assert len(batches) == 3 + 3 + 1 + 3
    assert [f for f, _ in batches] != sorted(f for f, _ in batches)  # folds interleave


def test_projector_learns_a_linear_map_better_than_the_mean():
    rng = np.random.default_rng(0)
    text = rng.normal(size=(600, 16)).astype(np.float32)
    behavior = (text @ rng.normal(size=(16, 4))).astype(np.float32)
    _, report = fit_projector(
        text, behavior, config=ProjectorConfig(hidden=32, epochs=40, batch_size=64)
    )
    assert report["held_out_fit"]["cosine"] > 0.9
    assert report["held_out_fit"]["r2"] > report["mean_vector_fit"]["r2"] + 0.2


def test_train_config_from_a_partial_dict_keeps_the_tuned_defaults():
    """The pipeline passes ``{}`` or a few fields: nested defaults must be LlaraTrainConfig's
    (the tuned ALS), not ALSConfig's own (a pipeline-trained model once lost 6% NDCG so)."""
    from dataclasses import replace

    default = LlaraTrainConfig()
    assert LlaraTrainConfig.from_dict({}) == default
    c = LlaraTrainConfig.from_dict(
        {"als": {"factors": 16}, "projector": {"epochs": 3}, "epochs": 2}
    )
    assert c.als == replace(default.als, factors=16)
    assert c.projector == replace(default.projector, epochs=3) and c.epochs == 2
    assert LlaraTrainConfig.from_dict(c.to_dict()) == c


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


def _titled_playlists(seed: int):
    """``(rng, unit title vectors (30, 8), playlists (30, 40) CSR, retriever's first four
    arguments)`` for 40 warm tracks."""
    rng = np.random.default_rng(seed)
    titles = rng.normal(size=(30, 8)).astype(np.float32)
    titles /= np.linalg.norm(titles, axis=1, keepdims=True)
    playlists = sp.random(30, 40, density=0.1, format="csr", random_state=seed + 1)
    playlists.data[:] = 1
    popularity = np.asarray(playlists.sum(0)).ravel()
    behavior = rng.normal(size=(40, 4)).astype(np.float32)
    return rng, titles, playlists, (behavior, popularity == 0, popularity, playlists.T.tocsr())


def test_retriever_title_knn_source_votes_the_tracks_of_similar_titles():
    _, titles, playlists, args = _titled_playlists(3)
    r = Retriever(
        *args,
        n_candidates=10,
        title_vectors=titles,
        title_neighbours=1,
    )
    none = np.array([], dtype=np.int64)
    got = r.retrieve(None, None, none, none, nearest_titles=r.nearest_titles(titles[7]))
    column = FEATURES.index("title_knn_score")
    held = set(playlists[7].indices.tolist())  # the one nearest title is playlist 7 itself
    voted = {int(c) for c, f in zip(got.candidates, got.features, strict=True) if f[column] > 0}
    assert voted == held
    with pytest.raises(ValueError, match="one per playlist"):
        Retriever(*args, title_vectors=titles[:5])


def test_retriever_artist_source_brings_the_seed_artists_warm_tracks():
    rng = np.random.default_rng(5)
    playlists = sp.random(30, 40, density=0.1, format="csr", random_state=6)
    playlists.data[:] = 1
    popularity = np.concatenate([np.asarray(playlists.sum(0)).ravel(), np.zeros(10)])
    behavior = rng.normal(size=(50, 4)).astype(np.float32)
    codes = np.full(50, -1)
    codes[[2, 5, 9, 45]] = 0  # artist 0: tracks 2, 5, 9 (warm) and 45 (cold: no vote)
    codes[[3, 7]] = 1
    r = Retriever(
        behavior,
        popularity == 0,
        popularity,
        playlists.T.tocsr(),
        n_candidates=8,
        artist_codes=codes,
    )
    seeds = np.array([2, 3, 20])  # one by artist 0, one by artist 1, one unknown
    got = r.retrieve(None, None, np.zeros(0, np.int64), seeds, seed_artists=codes[seeds])
    column = got.features[:, FEATURES.index("artist_score")]
    share = dict(zip(got.candidates.tolist(), column, strict=True))
    assert {5, 9, 7} <= set(share) and not set(seeds.tolist()) & set(share)
    assert share[5] == pytest.approx(1 / 3) and share[7] == pytest.approx(1 / 3)
    assert sum(v > 0 for v in share.values()) == 3  # no other track gets artist credit
    with pytest.raises(ValueError, match="one per track"):
        Retriever(
            behavior, popularity == 0, popularity, playlists.T.tocsr(), artist_codes=codes[:9]
        )


def test_retriever_title_query_is_the_nearest_titles_playlist_vectors():
    rng, titles, _, args = _titled_playlists(8)
    vectors = rng.normal(size=(30, 4)).astype(np.float32)
    r = Retriever(*args, title_vectors=titles, title_neighbours=2, playlist_vectors=vectors)
    sims = titles @ titles[7]
    near = np.argsort(-sims)[:2]  # playlist 7 itself and the next nearest title
    w = np.maximum(sims[near], 0) ** r.title_query_power
    got = r.title_query(r.nearest_titles(titles[7]))
    np.testing.assert_allclose(got, w @ vectors[near] / w.sum(), rtol=1e-5)
    assert r.title_query(r.nearest_titles(np.zeros(8, np.float32))) is None  # none near
    plain = Retriever(*args, title_vectors=titles)
    assert plain.title_query(plain.nearest_titles(titles[7])) is None
    with pytest.raises(ValueError, match="playlist_vectors"):
        Retriever(*args, title_vectors=titles, playlist_vectors=vectors[:, :3])


def test_title_names_artists_whole_title_first():
    from llarapp.models.llarapp import Stage, title_parts

    assert title_parts(" Paramore \u2013 Paramore ") == ("paramore \u2013 paramore", {"paramore"})
    assert title_parts("Drake x Future")[1] == {"drake", "future"}
    assert title_parts(None) == title_parts("  ") == ("", set())
    stage = Stage.__new__(Stage)  # title_artists reads only the artist names
    stage.artist_names = np.array(["tegan and sara", "sara", "drake", "future", "paramore"])
    assert stage.title_artists("Tegan and Sara").tolist() == [0]  # the whole title wins
    assert stage.title_artists("DRAKE x Future").tolist() == [2, 3]
    assert stage.title_artists("Paramore \u2013 Paramore").tolist() == [4]
    assert stage.title_artists("summer vibes").tolist() == stage.title_artists(None).tolist() == []


def test_artist_codes_fold_case_and_leave_missing_artists_unknown():
    from llarapp.training.stage import artist_codes

    codes, names = artist_codes(np.array(["Queen", "queen ", "", None, "ABBA"], dtype=object))
    assert codes[0] == codes[1] and codes[2] == codes[3] == -1 and codes[4] not in (-1, codes[0])
    assert names[codes[0]] == "queen" and names[codes[4]] == "abba"


def test_case_ndcg_matches_the_metric_for_any_blend():
    from llarapp.evaluation.metrics import ndcg
    from llarapp.models.llarapp import Query
    from llarapp.training.llara import CaseNDCG, RankCase

    rng = np.random.default_rng(7)
    cases = []
    for n in (30, 30, 12):
        cands = rng.choice(1000, n, replace=False)
        hidden = np.concatenate([rng.choice(cands, 3, replace=False), [2000, 2001]])
        feats = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
        q = Query(None, np.zeros(0, np.int64), np.zeros((0, 4), np.float32))
        cases.append(
            RankCase(None, q.seed_idx, cands, feats, hidden, np.zeros((2, 4)), np.ones(2), q, None)
        )
    for _ in range(3):
        w = rng.normal(size=len(FEATURES)).astype(np.float32)
        want = np.mean(
            [
                ndcg(
                    rc.candidates[np.argsort(-(rc.features @ w), kind="stable")].tolist(),
                    rc.hidden.tolist(),
                    k=10,
                )
                for rc in cases
            ]
        )
        assert CaseNDCG(cases, k=10)(w) == pytest.approx(want, abs=1e-6)


def test_each_seed_count_context_starts_at_its_own_blend():
    from llarapp.models.llarapp import Query
    from llarapp.training.llara import (
        MIN_CONTEXT_CASES,
        RankCase,
        context_of,
        tune_context_weights,
        tune_feature_weights,
    )

    rng = np.random.default_rng(3)

    def case(n_seeds: int, telling: int) -> RankCase:
        """30 candidates, 3 hidden; only feature ``telling`` knows which."""
        cands = rng.choice(1000, 30, replace=False)
        feats = rng.normal(size=(30, len(FEATURES))).astype(np.float32)
        feats[:3, telling] += 4.0
        seeds = np.arange(n_seeds, dtype=np.int64) + 5000
        q = Query(None, seeds, np.zeros((0, 4), np.float32))
        return RankCase(None, seeds, cands, feats, cands[:3], np.zeros((2, 4)), np.ones(2), q, None)

    title_only = [case(0, FEATURES.index("title_score")) for _ in range(MIN_CONTEXT_CASES)]
    one_seed = [case(1, FEATURES.index("artist_score")) for _ in range(MIN_CONTEXT_CASES + 20)]
    few = [case(10, FEATURES.index("seed_score")) for _ in range(5)]  # too few: the global blend
    cases = title_only + one_seed + few
    assert [context_of(rc) for rc in (title_only[0], one_seed[0], few[0])] == [0, 1, 3]
    weights = tune_context_weights(cases)
    assert weights.shape == (6, len(FEATURES))
    assert int(np.argmax(weights[0])) == FEATURES.index("title_score")
    assert int(np.argmax(weights[1])) == FEATURES.index("artist_score")
    for k in (2, 3, 4, 5):
        np.testing.assert_array_equal(weights[k], tune_feature_weights(cases)[0])


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


def test_a_model_from_before_playlist_vectors_asks_to_be_retrained(tiny, tmp_path):
    import shutil

    *_, model_dir, _ = tiny
    old = shutil.copytree(model_dir, tmp_path / "old")
    with np.load(old / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "playlist_vectors"}
    np.savez(old / "arrays.npz", **arrays)
    with pytest.raises(ValueError, match=r"older version.*Train a new model"):
        Recommender.load(old)


@pytest.mark.integration
def test_serving_path_matches_the_ranker_forward(tiny):
    data, split_dir, _, model = tiny
    for ec in load_cases(data, split_dir, "test")[:5]:
        cands = model.candidates(ec.case)
        inputs = model.ranker_inputs([cands], full=True)
        with torch.inference_mode():
            forward = model.ranker(**{k: torch.from_numpy(v) for k, v in inputs.items()})
        fast = model.ranker_scores(cands)
        np.testing.assert_allclose(fast, forward.scores[0].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.integration
def test_cold_and_unknown_tracks(tiny):
    *_, model = tiny
    stage = model.stage
    cold_uri = stage.catalog.uris[stage.n_warm]  # cold tracks follow the warm ones
    unknown = Track("Brand New Song", "Nobody Yet")  # no URI: text only
    recs = model.recommend(Case(title="chill", seeds=(Track("x", "y", cold_uri), unknown)), 40)
    assert len(recs) == 40 == len(set(recs)) and cold_uri not in recs
    assert len(model.recommend(Case(title=None), 10)) == 10  # nothing at all: popularity
    # a cold track (only distractor playlists hold it) by a played artist: a seed by that artist
    codes, uris = stage.retriever.artist_codes, stage.catalog.uris
    played = set(codes[: stage.n_warm].tolist()) - {-1}
    target = next(i for i in range(stage.n_warm, len(uris)) if codes[i] in played)
    seeds = [Track("", "", uris[i]) for i in range(stage.n_warm) if codes[i] == codes[target]]
    reached = model.candidates(Case(title=None, seeds=tuple(seeds[:5]))).candidates
    assert target in reached, "cold tracks reachable"
    code = int(stage.retriever.artist_codes[0])  # a new track by a warm track's artist
    rc = model.candidates(Case(title=None, seeds=(Track("New Single", stage.artist_names[code]),)))
    credited = rc.candidates[rc.features[:, FEATURES.index("artist_score")] == 1.0]
    assert 0 in credited and (stage.retriever.artist_codes[credited] == code).all()


@pytest.mark.integration
def test_text_only_ablation_uses_no_behavior_vector_and_reloads_as_trained(tiny, tmp_path):
    import dataclasses

    data, split_dir, _, full = tiny
    config = dataclasses.replace(TINY, curriculum="text-only")
    model = train_llara(
        data, split_dir, tmp_path / "text", config, tracking_uri=f"sqlite:///{tmp_path / 'm.db'}"
    )
    stage = model.stage
    assert not stage.fold_in and full.stage.fold_in and not model.hybrid
    np.testing.assert_allclose(stage.behavior, stage.track_projector.project(stage.catalog.text))
    loaded = Recommender.load(tmp_path / "text")
    assert not loaded.stage.fold_in
    for ec in load_cases(data, split_dir, "test")[:5]:
        assert loaded.recommend(ec.case, 50) == model.recommend(ec.case, 50)


@pytest.mark.integration
def test_a_model_with_other_retrieval_features_is_refused_with_the_way_out(tiny, tmp_path):
    import json
    import shutil

    *_, model_dir, _ = tiny
    old = shutil.copytree(model_dir, tmp_path / "old")
    config_file = old / "ranker" / "config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "n_features": len(FEATURES) - 1}))
    with pytest.raises(ValueError, match="Train a new model"):
        Recommender.load(old)


@pytest.mark.integration
def test_lora_retraining_merges_adapters_into_a_plain_ranker(tiny, tmp_path):
    import dataclasses

    import mlflow

    data, split_dir, model_dir, base = tiny
    config = dataclasses.replace(TINY, epochs=1, lora_r=4)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tuned = train_llara(
        data, split_dir, tmp_path / "tuned", config, tracking_uri=uri, base_model=model_dir
    )
    before, after = base.ranker.state_dict(), tuned.ranker.state_dict()
    assert after.keys() == before.keys()  # merged: no adapter weights left
    loaded = Recommender.load(tmp_path / "tuned")
    case = load_cases(data, split_dir, "test")[0].case
    assert loaded.recommend(case, 20) == tuned.recommend(case, 20)
    run = mlflow.search_runs(experiment_names=["llarapp"], output_format="list")[0]
    assert run.data.tags["llarapp.mode"] == "lora"
    base.stage.als.save(tmp_path / "als")
    with pytest.raises(ValueError, match="expected llara"):
        train_llara(
            data, split_dir, tmp_path / "x", config, tracking_uri=uri, base_model=tmp_path / "als"
        )


@pytest.mark.integration
def test_latency_benchmark_writes_its_json(tiny, tmp_path):
    from llarapp.benchmark.latency import format_table, run_latency

    data, _, model_dir, _ = tiny
    result = run_latency(model_dir, data.parent, tmp_path / "lat.json", threads=1, cases=12)
    assert result["cases"] > 0 and result["catalog_size"] > 0
    assert 0 < result["retrieve"]["p50_ms"] <= result["retrieve"]["p95_ms"]
    assert "retrieve_rank" in format_table(result)


def test_lora_adapters_merge_into_the_decoder_weights(tiny):
    import copy

    from llarapp.training.llara import _lora

    ranker = copy.deepcopy(tiny[3].ranker)
    before = {k: v.clone() for k, v in ranker.state_dict().items()}
    wrapped = _lora(ranker, 4)
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("feature_head" in n for n in trainable)
    assert any("cand_head" in n for n in trainable)  # the track tower, where dislikes land
    assert not any("base_layer" in n or n.endswith("model.norm.weight") for n in trainable)
    with torch.no_grad():  # what training would do: move the adapters off zero
        for n, p in wrapped.named_parameters():
            if "lora_B" in n:
                p.add_(0.01)
    merged = wrapped.merge_and_unload()
    after = merged.state_dict()
    assert after.keys() == before.keys()
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(after[q], before[q])
    assert torch.equal(after["model.norm.weight"], before["model.norm.weight"])


@pytest.mark.integration
def test_served_model_is_refitted_on_every_playlist_but_distractors(tiny, tmp_path):
    import pyarrow.parquet as pq

    data, split_dir, _, model = tiny
    folds = pq.read_table(split_dir / "folds.parquet").to_pandas()
    n = folds["fold"].value_counts()
    assert model.report["playlists"] == {
        "split_run": n["train"],
        "served": len(folds) - n["distractor"],
    }
    inter = pq.read_table(data / "interactions.parquet").to_pandas()
    fitted = folds.loc[folds["fold"] != "distractor", "pid"]
    played = set(inter.loc[inter["pid"].isin(fitted), "track_uri"])
    assert set(model.stage.catalog.uris[: model.stage.n_warm].tolist()) == played
    # the split run: the same ranker over the training fold's fit, kept when asked
    again = train_llara(
        data, split_dir, tmp_path / "served", TINY, refit=True,
        split_run_dir=tmp_path / "split-run", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
    )  # fmt: skip
    first = Recommender.load(tmp_path / "split-run")
    train_fold = load_train(data, split_dir)
    assert first.stage.n_warm == len(train_fold.track_uris) < again.stage.n_warm
    same = {k: v for k, v in first.ranker.state_dict().items() if "behavior_proj" not in k}
    for k, v in same.items():
        torch.testing.assert_close(v, again.ranker.state_dict()[k])
    case = load_cases(data, split_dir, "test")[0].case
    assert again.recommend(case, 30) == model.recommend(case, 30)  # deterministic under a seed


def test_training_caps_the_ranker_case_playlists_and_retrieves_them_by_index_above_the_threshold(
    tiny, tmp_path
):
    import dataclasses

    from llarapp.training.llara import prepare_llara

    data, split_dir, _, _ = tiny
    config = dataclasses.replace(TINY, ann_threshold=10, max_rank_playlists=4, rank_folds=4)
    prepared = prepare_llara(data, split_dir, config)
    assert 0 < len(prepared.train_cases) <= 4 * config.cases_per_playlist
    n_train = len(load_train(data, split_dir).pids)
    assert len(prepared.fold_stages) == config.rank_folds
    for stage in prepared.fold_stages:  # 4 playlists in 4 folds: the rest fit each fold's stage
        assert stage.report["playlists"] == n_train - 4 // config.rank_folds

    def indexes_its_vectors(stage) -> None:
        index = stage.retriever.behavior_index
        assert index is not None and stage.retriever.title_index is not None
        nprobe, index.nprobe = index.nprobe, index.nlist  # every list: the exact answer
        queries = stage.behavior[:5] + 0.1
        scores, rows = index.search(queries, 10)  # (cold tracks of one artist tie)
        want = -np.sort(-(queries @ stage.behavior.T), axis=1)[:, :10]
        np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            np.einsum("qf,qkf->qk", queries, stage.behavior[rows]), scores, rtol=1e-5
        )
        index.nprobe = nprobe

    for stage in (*prepared.fold_stages, prepared.stage):  # the folds' after their rotation
        indexes_its_vectors(stage)
    assert {rc.fold for rc in prepared.train_cases} == set(range(config.rank_folds))
    model = train_llara(  # each batch read by its own fold stage
        data, split_dir, tmp_path / "model", config, prepared=prepared, refit=False,
        tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
    )  # fmt: skip
    assert model.report["train_cases"] == len(prepared.train_cases)
    best = model.report["history"][-1]["best_epoch"]  # which ranker ships, said plainly
    assert model.report["ranker"] == ("feature head" if best < 0 else f"transformer, epoch {best}")
    assert len(model.report["history"]) >= 2  # the start and at least one epoch
    text_only = prepared.without_behavior(config.max_seeds)
    indexes_its_vectors(text_only.fold_stages[0])  # the projected texts, not the ALS vectors
    indexes_its_vectors(text_only.stage)
