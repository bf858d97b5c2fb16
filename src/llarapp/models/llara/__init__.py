"""LLaRA++ ranker: a compact Llama-style transformer over vector tokens that scores candidates.

Importing this package registers ``model_type="llara"`` with ``AutoConfig`` / ``AutoModel``
(bare :class:`LlaraModel`), so ``AutoConfig.from_pretrained`` / ``AutoModel.from_pretrained``
work on saved checkpoints once it has been imported.
"""

from transformers import AutoConfig, AutoModel

from llarapp.models.llara.configuration_llara import LlaraConfig
from llarapp.models.llara.modeling_llara import (
    CONTEXT_STEPS,
    INPUT_NAMES,
    MASKED_SCORE,
    LlaraForCandidateScoring,
    LlaraModel,
    LlaraPreTrainedModel,
    LlaraRankerOutput,
    listwise_softmax_loss,
    load_minilm_backbone,
    minilm_backbone_config,
)

AutoConfig.register(LlaraConfig.model_type, LlaraConfig, exist_ok=True)
AutoModel.register(LlaraConfig, LlaraModel, exist_ok=True)

__all__ = [
    "CONTEXT_STEPS",
    "INPUT_NAMES",
    "MASKED_SCORE",
    "LlaraConfig",
    "LlaraForCandidateScoring",
    "LlaraModel",
    "LlaraPreTrainedModel",
    "LlaraRankerOutput",
    "listwise_softmax_loss",
    "load_minilm_backbone",
    "minilm_backbone_config",
]
