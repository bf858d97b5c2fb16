"""Configuration of the LLaRA++ ranker (:class:`LlaraConfig`).

Follows the transformers 5.x configuration conventions (see ``LlamaConfig``): the config is a
strict dataclass whose fields are declared as annotated class attributes with defaults;
``__post_init__`` derives and checks values, and ``validate_architecture`` (run by the ``@strict``
machinery, e.g. again on ``save_pretrained``) re-checks them after later edits.

Unlike the stock ``validate_architecture`` path, which wraps errors in
``huggingface_hub.errors.StrictDataclassClassValidationError``, construction raises a plain
:class:`ValueError` whose message names the offending numbers.
"""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

#: Choices of :attr:`LlaraConfig.backbone`.
BACKBONES = ("decoder", "minilm")

_FLOAT_FIELDS = (
    "rms_norm_eps",
    "rope_theta",
    "attention_dropout",
    "hidden_dropout",
    "initializer_range",
    "interaction_init",
)


@strict
class LlaraConfig(PreTrainedConfig):
    r"""Configuration of :class:`~llarapp.models.llara.modeling_llara.LlaraModel` and
    :class:`~llarapp.models.llara.modeling_llara.LlaraForCandidateScoring`.

    The model reads vectors, not word ids: a playlist-title vector, one hybrid item token per
    seed track (text vector ⊕ behavior vector) and a learned QUERY token, and scores candidate
    tracks (hybrid item tokens too, plus ``n_features`` scalar features each).

    Args:
        text_dim: Size of the text (MiniLM) vectors of titles and tracks.
        behavior_dim: Size of the behavior (ALS) vectors of tracks.
        hidden_size: Width of the transformer (and of the query / candidate vectors).
        num_hidden_layers: Number of decoder blocks.
        num_attention_heads: Number of query heads.
        num_key_value_heads: Number of key/value heads (grouped-query attention); must divide
            ``num_attention_heads``. Equal to ``num_attention_heads`` is plain multi-head
            attention, ``1`` is multi-query attention.
        intermediate_size: Width of the SwiGLU MLP.
        rms_norm_eps: Epsilon of the RMS norms.
        rope_theta: Base of the rotary position embeddings.
        max_position_embeddings: Longest sequence the model is meant for: max seeds + 2
            (title and QUERY tokens). Rotary embeddings have no table, so longer sequences still
            run; this documents the trained range.
        n_features: Number of scalar features per candidate (e.g. retriever scores).
        attention_dropout: Dropout probability on the attention weights (training only).
        hidden_dropout: Dropout probability on the embeddings and on each sub-layer output
            (training only).
        initializer_range: Standard deviation of the normal weight initialisation.
        interaction_init: Starting value of the learned gate on the transformer term ``q · c``;
            0 starts the ranker as a pure feature model, which training opens only as far as it
            helps.
        backbone: ``"decoder"`` (the Llama-style decoder blocks above, trained from scratch) or
            ``"minilm"``: the first ``num_hidden_layers`` transformer layers of a BERT-family
            encoder (MiniLM, LLaRA's LLM role), bidirectional, with its learned position
            embeddings. ``hidden_size`` and ``num_attention_heads`` must equal the encoder's;
            its MLP width comes from ``backbone_config`` (``intermediate_size``,
            ``num_key_value_heads`` and ``rope_theta`` are then unused).
        backbone_config: With ``backbone="minilm"``, the encoder's ``BertConfig`` as a dict
            (``modeling_llara.minilm_backbone_config``); saved with the model, so
            ``from_pretrained`` rebuilds the same layers.

    Example:
        ```python
        >>> from llarapp.models.llara import LlaraConfig, LlaraForCandidateScoring
        >>> config = LlaraConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2)
        >>> model = LlaraForCandidateScoring(config)
        ```
    """

    model_type = "llara"

    text_dim: int = 384
    behavior_dim: int = 128
    hidden_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 256
    rms_norm_eps: float | int = 1e-6
    rope_theta: float | int = 10000.0
    max_position_embeddings: int = 256
    n_features: int = 4
    attention_dropout: float | int = 0.0
    hidden_dropout: float | int = 0.1
    initializer_range: float | int = 0.02
    interaction_init: float | int = 1.0
    backbone: str = "decoder"
    backbone_config: dict | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        """Coerce float fields, check the sizes (plain ``ValueError``), then base post-init."""
        for name in _FLOAT_FIELDS:
            setattr(self, name, float(getattr(self, name)))
        self._check_llara_architecture()
        super().__post_init__(**kwargs)

    @property
    def head_dim(self) -> int:
        """Size of one attention head: ``hidden_size // num_attention_heads``."""
        return self.hidden_size // self.num_attention_heads

    def validate_architecture(self) -> None:
        """Part of the ``@strict`` validation (also run by ``save_pretrained``)."""
        super().validate_architecture()
        self._check_llara_architecture()

    def _check_llara_architecture(self) -> None:
        """Raise a ``ValueError`` naming the offending numbers if the sizes do not fit together.

        Raises:
            ValueError: On a non-positive size, a head count that does not divide its
                counterpart, an odd head size (rotary embeddings rotate pairs), a dropout outside
                ``[0, 1)``, a non-positive epsilon / rotary base / initializer range, or a
                ``max_position_embeddings`` below 2 (title + QUERY).
        """
        for name in (
            "text_dim",
            "behavior_dim",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "n_features",
        ):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {name}={value}.")
        if self.max_position_embeddings < 2:
            raise ValueError(
                "`max_position_embeddings` must be at least 2 (title + QUERY tokens), got "
                f"max_position_embeddings={self.max_position_embeddings}."
            )
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"`num_attention_heads` ({self.num_attention_heads}) must be divisible by "
                f"`num_key_value_heads` ({self.num_key_value_heads})."
            )
        head_dim = self.hidden_size // self.num_attention_heads
        if head_dim % 2 != 0:
            raise ValueError(
                f"The head size hidden_size / num_attention_heads = {self.hidden_size} / "
                f"{self.num_attention_heads} = {head_dim} must be even for rotary embeddings."
            )
        for name in ("attention_dropout", "hidden_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {name}={value}.")
        for name in ("rms_norm_eps", "rope_theta", "initializer_range"):
            value = getattr(self, name)
            if not value > 0.0:
                raise ValueError(f"`{name}` must be positive, got {name}={value}.")
        self._check_backbone()

    def _check_backbone(self) -> None:
        """Raise a ``ValueError`` on an unknown backbone or a MiniLM one that does not fit."""
        if self.backbone not in BACKBONES:
            raise ValueError(f"`backbone` must be one of {BACKBONES}, got {self.backbone!r}.")
        if self.backbone == "decoder":
            return
        if not self.backbone_config:
            raise ValueError(
                "`backbone_config` (the encoder's BertConfig as a dict) is required with "
                "backbone='minilm'."
            )
        for name in ("hidden_size", "num_attention_heads"):
            theirs = self.backbone_config.get(name)
            if theirs != getattr(self, name):
                raise ValueError(
                    f"`{name}` ({getattr(self, name)}) must equal the MiniLM backbone's "
                    f"{name} ({theirs})."
                )
        layers = self.backbone_config.get("num_hidden_layers", 0)
        if self.num_hidden_layers > layers:
            raise ValueError(
                f"`num_hidden_layers` ({self.num_hidden_layers}) must not exceed the MiniLM "
                f"backbone's {layers} layers."
            )
        positions = self.backbone_config.get("max_position_embeddings", 0)
        if self.max_position_embeddings > positions:
            raise ValueError(
                f"`max_position_embeddings` ({self.max_position_embeddings}) must not exceed the "
                f"MiniLM backbone's learned positions ({positions})."
            )


__all__ = ["LlaraConfig"]
