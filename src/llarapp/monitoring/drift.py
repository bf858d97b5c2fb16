"""The drift decision: a current request window against a reference window, per column and overall.

Each tabular column is tested with an Evidently stat test called directly (the function the
Report's ``ValueDrift`` calls with the same method name), the title vectors with an Evidently
embedding drift method called directly (the one the Report's ``EmbeddingsDrift`` runs, without
its t-SNE plot). The window has drifted when any column has.

The title vectors are also clustered on the reference (k-means, ``title_clusters``), and each
request's nearest cluster is a categorical column, ``title_cluster``: a scene or a language
taking a larger share of the titles moves its clusters' shares. On synthetic data the
domain classifier alone caught a scene taking half the traffic in 75 % of 12 windows of 200
requests, a chi-square on 32 clusters in all of 20.

The methods and thresholds are :class:`DriftConfig`'s defaults, chosen by measurement with
``llarapp benchmark drift`` (docs/monitoring.md): p-value tests at 0.01 each; a domain
classifier on 20 principal components of the title vectors, drifted when its ROC AUC beats the
99th percentile of random scores' AUC. The title clusters use a two-sample chi-square
(``chisquare_2samp``, registered here with Evidently so the Report runs it too): Evidently's
``chisquare`` takes the reference's shares as exact, and against mpd-dev's 1,061 reference
requests it false-alarmed in 12.5 % of undrifted windows of 500 even at p < 0.001.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from evidently.legacy.calculations.stattests import StatTest, get_stattest, register_stattest
from evidently.legacy.core import ColumnType
from evidently.legacy.metrics.data_drift.embedding_drift_methods import ModelDriftMethod
from scipy.stats import chi2_contingency
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from llarapp.monitoring.window import COLUMNS, Window

#: The window size the continuous pipeline checks (requests): the smallest measured size with
#: false alarms <= 5 % and detection >= 95 % for every drift kind on mpd-dev and synthetic data
#: (at 200 a scene taking half the traffic was caught in 70 % of mpd-dev windows); it needs a
#: reference of about twice as many requests (docs/monitoring.md).
DEFAULT_WINDOW = 500
EMBEDDINGS = "title_vector"
TITLE_CLUSTER = "title_cluster"


def _chisquare_2samp(reference_data, current_data, feature_type, threshold):
    """Chi-square test of the 2 x k table of category counts (both windows are samples)."""
    keys = sorted(set(reference_data.dropna()) | set(current_data.dropna()))
    table = [[int((data == k).sum()) for k in keys] for data in (reference_data, current_data)]
    p_value = float(chi2_contingency(table)[1]) if len(keys) > 1 else 1.0
    return p_value, p_value < threshold


register_stattest(
    StatTest(
        name="chisquare_2samp",
        display_name="chi-square p_value (two samples)",
        allowed_feature_types=[ColumnType.Categorical],
        default_threshold=0.01,
    ),
    default_impl=_chisquare_2samp,
)


@dataclass(frozen=True)
class ColumnTest:
    """One column's Evidently stat test: ``method`` (a registered name) and its p-value level."""

    method: str
    threshold: float
    categorical: bool = False


@dataclass(frozen=True)
class DriftConfig:
    """Methods and thresholds of the drift decision (defaults measured, see the module doc)."""

    columns: dict[str, ColumnTest] = field(
        default_factory=lambda: {
            "n_seeds": ColumnTest("ks", 0.01),
            "unknown_share": ColumnTest("ks", 0.01),
            "seed_popularity": ColumnTest("ks", 0.01),
            "title_only": ColumnTest("z", 0.01, categorical=True),
        }
    )
    title_cluster: ColumnTest = ColumnTest("chisquare_2samp", 0.01, categorical=True)
    title_clusters: int = 32  # k-means clusters of the reference's title vectors
    pca_components: int = 20  # title vectors are reduced on the reference before the classifier
    quantile: float = 0.99  # the classifier's AUC must beat this quantile of random AUCs

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(COLUMNS))
        if unknown:
            raise ValueError(f"DriftConfig.columns: unknown {unknown}; expected some of {COLUMNS}")
        if not 0.5 < self.quantile < 1:
            raise ValueError(f"DriftConfig.quantile={self.quantile}: expected 0.5 < x < 1")

    def embedding_method(self, pca: bool = True) -> ModelDriftMethod:
        """The Evidently embedding drift method the decision (and the Report) runs; without
        its PCA (``pca=False``) for vectors already reduced by :class:`Reference`."""
        return ModelDriftMethod(
            bootstrap=True,
            quantile_probability=self.quantile,
            pca_components=self.pca_components if pca else None,
        )


@dataclass(frozen=True)
class Reference:
    """A reference window, the k-means clusters of its title vectors and their PCA.

    The PCA is the one Evidently's embedding method fits on the reference for every call
    (``get_pca_df``: ``PCA(n, random_state=0)``), fitted once here.
    """

    window: Window
    kmeans: KMeans
    pca: PCA

    @classmethod
    def of(cls, window: Window, config: DriftConfig | None = None) -> Reference:
        """Cluster ``window``'s title vectors (``config.title_clusters``, seeded: repeatable)."""
        config = config or DriftConfig()
        if len(window) < config.title_clusters:
            raise ValueError(
                f"reference window has {len(window)} requests; expected at least "
                f"{config.title_clusters} (DriftConfig.title_clusters)"
            )
        kmeans = KMeans(config.title_clusters, n_init=1, random_state=0).fit(window.vectors)
        pca = PCA(n_components=config.pca_components, random_state=0).fit(window.vectors)
        return cls(window, kmeans, pca)

    def clusters(self, window: Window) -> pd.Series:
        """Each request's nearest reference title cluster."""
        return pd.Series(self.kmeans.predict(window.vectors), name=TITLE_CLUSTER)


@dataclass(frozen=True)
class ColumnDrift:
    """One column's verdict: the method, its score (p-value, or ROC AUC) and threshold."""

    column: str
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass(frozen=True)
class DriftResult:
    """Every column's verdict; ``drifted`` when any column drifted."""

    columns: list[ColumnDrift]
    reference_rows: int
    current_rows: int

    @property
    def drifted(self) -> bool:
        return any(c.drifted for c in self.columns)

    def to_dict(self) -> dict:
        return {
            "drift": self.drifted,
            "drifted_columns": [c.column for c in self.columns if c.drifted],
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "columns": {c.column: asdict(c) for c in self.columns},
        }


def _column(ref: pd.Series, cur: pd.Series, name: str, test: ColumnTest) -> ColumnDrift:
    ref, cur = ref.dropna(), cur.dropna()
    if ref.empty or cur.empty:  # e.g. no known seed anywhere in a window: nothing to compare
        return ColumnDrift(name, test.method, float("nan"), test.threshold, False)
    kind = ColumnType.Categorical if test.categorical else ColumnType.Numerical
    result = get_stattest(ref, cur, kind, test.method)(ref, cur, kind, test.threshold)
    return ColumnDrift(name, test.method, float(result.drift_score), test.threshold,
                       bool(result.drifted))  # fmt: skip


def embedding_drift(
    reference: np.ndarray, current: np.ndarray, config: DriftConfig | None = None
) -> ColumnDrift:
    """The title vectors' verdict, by :meth:`DriftConfig.embedding_method` called directly.

    Raises:
        ValueError: the two sets of vectors differ in dimension or one is empty.
    """
    config = config or DriftConfig()
    if reference.ndim != 2 or current.ndim != 2 or reference.shape[1] != current.shape[1]:
        raise ValueError(
            f"title vectors: reference {reference.shape} and current {current.shape}; expected "
            "two (rows, dim) arrays of the same dim"
        )
    if not len(reference) or not len(current):
        raise ValueError("title vectors: an empty set; expected rows in both")
    method = config.embedding_method()
    score, drifted, _ = method(pd.DataFrame(current), pd.DataFrame(reference))
    return ColumnDrift(EMBEDDINGS, "model", float(score), config.quantile, bool(drifted))


def check_drift(
    reference: Window | Reference, current: Window, config: DriftConfig | None = None
) -> DriftResult:
    """Has ``current`` drifted from ``reference``? Every column's test, then the overall verdict.

    Pass a :class:`Reference` to check many windows against one reference without clustering
    its titles again.

    Raises:
        ValueError: the reference is smaller than ``config.title_clusters``.
    """
    config = config or DriftConfig()
    if isinstance(reference, Window):
        reference = Reference.of(reference, config)
    ref = reference.window  # both windows hold 384-d vectors (Window checks)
    score, drifted, _ = config.embedding_method(pca=False)(
        pd.DataFrame(reference.pca.transform(current.vectors)),
        pd.DataFrame(reference.pca.transform(ref.vectors)),
    )
    embeddings = ColumnDrift(EMBEDDINGS, "model", float(score), config.quantile, bool(drifted))
    columns = [
        _column(ref.frame[name], current.frame[name], name, test)
        for name, test in config.columns.items()
    ]
    columns.append(
        _column(reference.clusters(ref), reference.clusters(current), TITLE_CLUSTER,
                config.title_cluster)
    )  # fmt: skip
    columns.append(embeddings)
    return DriftResult(columns, len(ref), len(current))
