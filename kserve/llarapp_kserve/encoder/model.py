"""``EncoderModel``: step 1 of the graph.

v1 / JSON: the person's request ``{"name", "tracks", "k"}`` -> the graph payload (see
:mod:`llarapp.serving.engine`). v2: ``text`` BYTES [n] -> ``embedding`` FP32 [n, 384];
``track_uri`` BYTES [m] -> ``catalog_index`` INT64 [m] (-1 where unknown); ``artist_name``
BYTES [m] -> ``artist_index`` INT64 [m] (the artist codes the retriever's ``seed_artists`` takes,
-1 where unknown); ``title`` BYTES [1] -> ``title_artists`` INT64 [a] (the codes of the artists
the playlist title names, the retriever's ``title_artists``).
"""

from __future__ import annotations

import numpy as np

from llarapp.serving.request import RequestError, parse_recommend
from llarapp_kserve.common import PayloadError, StepModel, require


def _strings(arr: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.ravel().tolist()]


class EncoderModel(StepModel):
    step = "encode"

    def from_json(self, payload):
        try:
            return parse_recommend(payload)
        except RequestError as exc:
            raise PayloadError(exc.message, exc.status) from exc

    def predict_tensors(self, inputs, request):
        out = {}
        text = require(inputs, "text", object, 1, optional=True)
        uris = require(inputs, "track_uri", object, 1, optional=True)
        artists = require(inputs, "artist_name", object, 1, optional=True)
        title = require(inputs, "title", object, 1, optional=True)
        if text is None and uris is None and artists is None and title is None:
            raise PayloadError(
                "v2: give a 'text', 'track_uri', 'artist_name' and/or 'title' input (BYTES, 1-D)"
            )
        if title is not None and len(title) != 1:
            raise PayloadError(f"v2: 'title' holds {len(title)} strings; expected 1")
        if text is not None:
            out["embedding"] = self.core.texts.encode(_strings(text), self.core.text_dim)
        if uris is not None:
            index = self.core.index
            out["catalog_index"] = np.array([index.get(u, -1) for u in _strings(uris)], np.int64)
        if artists is not None:
            code = self.core.stage.artist_code
            out["artist_index"] = np.array([code(a) for a in _strings(artists)], np.int64)
        if title is not None:
            out["title_artists"] = self.core.stage.title_artists(_strings(title)[0])
        return out
