"""LLaRA++ inference, one path: ``encode(case) -> Query``, ``retrieve(Query) -> Candidates``,
``rank(Candidates, k) -> Ranked``.

:meth:`LlaraPP.recommend` is exactly these steps; the quality benchmark, the pipeline's gate and
the model servers (:class:`llarapp.serving.engine.ServingEngine`, an adapter between payloads and
these types) all run them. Training (:mod:`llarapp.training`) only fits.
"""

from llarapp.models.llarapp.catalog import NewTrack, TracksFileError, add_tracks, read_new_tracks
from llarapp.models.llarapp.model import LlaraPP
from llarapp.models.llarapp.stage import Catalog, Query, Stage, artist_key, title_parts
from llarapp.models.llarapp.steps import (
    Candidates,
    Embed,
    Ranked,
    encode,
    rank_seeds,
    ranker_inputs,
    retrieve,
)

__all__ = [
    "Candidates",
    "Catalog",
    "Embed",
    "LlaraPP",
    "NewTrack",
    "Query",
    "Ranked",
    "Stage",
    "TracksFileError",
    "add_tracks",
    "artist_key",
    "encode",
    "rank_seeds",
    "ranker_inputs",
    "read_new_tracks",
    "retrieve",
    "title_parts",
]
