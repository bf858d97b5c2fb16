"""``RetrieverModel``: step 2 of the graph.

v1 / JSON: the encoder's payload -> the same plus ``candidates``, ``features``,
``rank_seed_idx``. v2: ``title_vec`` FP32 [384] (optional), ``seed_idx`` INT64 [S] (optional),
``seed_text`` FP32 [m, 384] (optional), ``seed_artists`` INT64 [m] (optional: those seeds'
artist codes from the encoder's ``artist_index``, -1 unknown), ``title_artists`` INT64 [a]
(optional: the encoder's ``title_artists``) -> ``candidates`` INT64 [N],
``features`` FP32 [N, F], ``rank_seed_idx`` INT64 [S'].
"""

from __future__ import annotations

import numpy as np

from llarapp_kserve.common import StepModel, require


class RetrieverModel(StepModel):
    step = "retrieve"

    def predict_tensors(self, inputs, request):
        payload = {
            "title_vec": require(inputs, "title_vec", np.float32, 1, optional=True),
            "seed_idx": require(inputs, "seed_idx", np.int64, 1, optional=True),
            "seed_text": require(inputs, "seed_text", np.float32, 2, optional=True),
            "seed_artists": require(inputs, "seed_artists", np.int64, 1, optional=True),
            "title_artists": require(inputs, "title_artists", np.int64, 1, optional=True),
        }
        if payload["seed_idx"] is None:
            payload["seed_idx"] = np.zeros(0, np.int64)
        out = self.run_step(payload)
        return {k: out[k] for k in ("candidates", "features", "rank_seed_idx")}
