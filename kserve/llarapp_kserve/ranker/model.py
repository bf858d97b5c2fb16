"""``RankerModel``: step 3 of the graph (LLaRA++; the ONNX export when present, else PyTorch).

v1 / JSON: the retriever's payload -> ``{"recommended_tracks": [...], "model_version"}``.
v2: ``candidates`` INT64 [N], ``features`` FP32 [N, F], ``title_vec`` FP32 [384] (optional),
``rank_seed_idx`` INT64 [S] (optional), ``exclude_idx`` INT64 [E] (optional); parameter ``k``
(default N) -> ``track_index`` INT64 [k], ``score`` FP32 [k] (catalogue indices, best first).
"""

from __future__ import annotations

import numpy as np

from llarapp_kserve.common import PayloadError, StepModel, require


class RankerModel(StepModel):
    step = "rank"

    def predict_tensors(self, inputs, request):
        cands = require(inputs, "candidates", np.int64, 1)
        k = (request.parameters or {}).get("k", max(len(cands), 1))
        k = getattr(k, "int64_param", k)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise PayloadError(f"v2: parameter k={k!r}; expected an integer >= 1")
        payload = {
            "request": {"k": k},
            "candidates": cands,
            "features": require(inputs, "features", np.float32, 2),
            "title_vec": require(inputs, "title_vec", np.float32, 1, optional=True),
            "rank_seed_idx": require(inputs, "rank_seed_idx", np.int64, 1, optional=True),
            "exclude_idx": require(inputs, "exclude_idx", np.int64, 1, optional=True),
        }
        if payload["rank_seed_idx"] is None:
            payload["rank_seed_idx"] = np.zeros(0, np.int64)
        out = self.run_step(payload)
        index = self.core.index
        tracks = out["recommended_tracks"]
        return {
            "track_index": np.array([index[t["track_uri"]] for t in tracks], np.int64),
            "score": np.array([t["score"] for t in tracks], np.float32),
        }
