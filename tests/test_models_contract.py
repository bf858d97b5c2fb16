"""One contract every recommender honours, run against every model on a set whose answer is known.

The set: two scenes that never mix. Twenty "rock anthems" playlists draw from ten rock tracks,
twenty "smooth jazz" playlists from ten jazz tracks; jazz tracks are the more popular overall, so
a model that ignores its input recommends jazz first.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from llarapp.config import ALSConfig, ItemKNNConfig, TitleKNNConfig
from llarapp.data.dataset import Case, Track, TrainSet
from llarapp.models import ALS, ItemKNN, MostPopular, Recommender, TitleKNN

ROCK = [f"spotify:track:rock{i:018d}" for i in range(10)]
JAZZ = [f"spotify:track:jazz{i:018d}" for i in range(10)]


def known_answer_set() -> TrainSet:
    rng = np.random.default_rng(0)
    uris = np.array(sorted(ROCK + JAZZ), dtype=object)
    col = {u: i for i, u in enumerate(uris)}
    rows, cols, titles = [], [], []
    for p in range(40):
        scene, title, size = (ROCK, "rock anthems", 4) if p < 20 else (JAZZ, "smooth jazz", 7)
        for u in rng.choice(scene, size=size, replace=False):
            rows.append(p)
            cols.append(col[u])
        titles.append(title)
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(40, len(uris)))
    names = np.array([u[-6:] for u in uris], dtype=object)
    artists = np.array(["Rock Band" if u in ROCK else "Jazz Trio" for u in uris], dtype=object)
    return TrainSet(
        track_uris=uris,
        track_names=names,
        artist_names=artists,
        album_names=np.array([""] * len(uris), dtype=object),
        pids=np.arange(40),
        titles=np.array(titles, dtype=object),
        matrix=matrix,
    )


def seed(uri: str) -> Track:
    return Track("some song", "Rock Band", uri)


ROCK_CASE = Case(title="rock anthems", seeds=(seed(ROCK[0]), seed(ROCK[1])))


class RecommenderContract:
    """Mix into a test class and define ``make`` (an unfitted model) and ``answer_case``."""

    answer_case: Case = ROCK_CASE
    expected_first: list[str] = ROCK  # the first len(set) - seeds recommendations come from here

    @classmethod
    def make(cls) -> Recommender:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls) -> Recommender:
        return cls.make().fit(known_answer_set())

    def test_k_distinct_catalogue_tracks_without_seeds(self, model):
        recs = model.recommend(ROCK_CASE, k=10)
        assert len(recs) == 10 == len(set(recs))
        assert set(recs) <= set(ROCK + JAZZ)
        assert not {ROCK[0], ROCK[1]} & set(recs)

    def test_k_beyond_catalogue_returns_every_other_track(self, model):
        recs = model.recommend(ROCK_CASE, k=500)
        assert sorted(recs) == sorted(set(ROCK + JAZZ) - {ROCK[0], ROCK[1]})

    def test_known_answer(self, model):
        seeds = {t.track_uri for t in self.answer_case.seeds}
        want = set(self.expected_first) - seeds
        assert set(model.recommend(self.answer_case, k=len(want))) == want

    def test_deterministic(self, model):
        assert model.recommend(ROCK_CASE, 15) == model.recommend(ROCK_CASE, 15)

    def test_empty_and_unknown_inputs(self, model):
        assert len(model.recommend(Case(title=None), k=5)) == 5
        unknown = Case(title="", seeds=(Track("new", "nobody"), seed("spotify:track:" + "x" * 22)))
        assert len(model.recommend(unknown, k=5)) == 5

    def test_save_load_round_trip(self, model, tmp_path):
        model.save(tmp_path / "m")
        loaded = Recommender.load(tmp_path / "m")
        assert type(loaded) is type(model)
        for case in (ROCK_CASE, Case(title="smooth jazz"), Case(title=None)):
            assert loaded.recommend(case, 20) == model.recommend(case, 20)

    def test_recommend_before_fit_is_an_error(self):
        with pytest.raises(RuntimeError, match="before fit"):
            self.make().recommend(ROCK_CASE, 5)

    def test_bad_k(self, model):
        with pytest.raises(ValueError, match="k=0"):
            model.recommend(ROCK_CASE, 0)


class TestMostPopular(RecommenderContract):
    answer_case = Case(title="rock anthems")
    expected_first = JAZZ  # popularity ignores the case: jazz is more popular

    @classmethod
    def make(cls):
        return MostPopular()


class TestItemKNN(RecommenderContract):
    @classmethod
    def make(cls):
        return ItemKNN(ItemKNNConfig(alpha=0.5))


class TestALS(RecommenderContract):
    @classmethod
    def make(cls):
        return ALS(ALSConfig(factors=2, iterations=15, regularization=0.1, alpha=10.0))


class TestALSNoBM25(RecommenderContract):
    @classmethod
    def make(cls):
        return ALS(ALSConfig(factors=2, iterations=15, regularization=0.1, bm25=False))


class TestTitleKNN(RecommenderContract):
    answer_case = Case(title="rock ballads")  # not a training title: the text carries it

    @classmethod
    def make(cls):
        return TitleKNN(TitleKNNConfig(neighbours=10))


@pytest.mark.parametrize("bm25", [False, True])
def test_als_fold_in_solves_implicits_normal_equations(bm25):
    """user_vector equals implicit's recalculate_user (duplicated seeds counted twice)."""
    train = known_answer_set()
    model = ALS(ALSConfig(factors=4, iterations=10, bm25=bm25)).fit(train)
    for seeds in ([0], [1, 5, 9], [2, 2, 7]):
        idx = np.array(seeds)
        row = sp.csr_matrix(
            (np.ones(len(idx), np.float32), (np.zeros(len(idx), np.int64), idx)),
            shape=(1, model.n_items),
        )
        want = model._model.recalculate_user(0, model._weigh(row))
        np.testing.assert_allclose(model.user_vector(idx), want, rtol=1e-4, atol=1e-5)


def test_load_refuses_unknown_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.json"):
        Recommender.load(tmp_path)
    (tmp_path / "model.json").write_text('{"name": "nope"}')
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        Recommender.load(tmp_path)


class TestLlaraPP(RecommenderContract):
    """LLaRA++ fitted through the training entry point (``LlaraPP.fit`` -> ``fit_trainset``)
    with the tiny config, ALS and candidates shrunk to the 20-track set."""

    @classmethod
    def make(cls):
        import dataclasses

        from tiny_model import TINY

        import llarapp.training.llara  # noqa: F401 (sets LlaraPP.trainer)
        from llarapp.config import ALSConfig
        from llarapp.models.llarapp import LlaraPP

        config = dataclasses.replace(
            TINY,
            als=ALSConfig(factors=2, iterations=15, regularization=0.1, alpha=10.0),  # as TestALS
            n_candidates=20,
            rank_share=0.5,
            rank_folds=2,
        )
        return LlaraPP(config.to_dict())

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls, tmp_path_factory):
        tracking = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", tracking)
            return cls.make().fit(known_answer_set())


def test_llara_fit_without_the_training_code_says_how(monkeypatch):
    from llarapp.models.llarapp import LlaraPP

    monkeypatch.setattr(LlaraPP, "trainer", None)
    with pytest.raises(RuntimeError, match=r"import llarapp\.training\.llara"):
        LlaraPP({}).fit(known_answer_set())
