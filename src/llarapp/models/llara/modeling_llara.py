"""LLaRA++ ranker: a compact Llama-style decoder over vector tokens that scores candidate tracks.

The input tokens are vectors, not word ids. A playlist is read as the sequence::

    [TITLE, SEED_1 .. SEED_S (right-padded, masked), QUERY]

* TITLE: the text (MiniLM) vector of the playlist title; masked out when absent (``title_mask=0``).
* SEED_i: a *hybrid item token* per seed track, ``RMSNorm(text_proj(text) + use_behavior *
  behavior_proj(behavior))``; ``use_behavior=0`` gives a text-only token that does not depend on
  the behavior input at all (curriculum learning switches it per token).
* QUERY: a learned vector; its final hidden state is the playlist query vector ``q``.

A learned token-type embedding (title / seed / query) is added to each token. The decoder blocks
are Llama's: pre-RMSNorm, grouped-query attention with rotary position embeddings through
``torch.nn.functional.scaled_dot_product_attention`` under a boolean mask that is causal and hides
padded / absent keys, and a SwiGLU MLP. Rotary positions count only the tokens present, so
padding (more seed slots, an absent title) never shifts the relative positions the model sees.

Candidates are hybrid item tokens too (the same, shared embedding module) mapped by a small MLP to
``c``; ``score = g · (q · c) / sqrt(hidden_size) + (w + Δ) · features + b`` with ``g`` a
learned gate, ``w, b`` the feature head and ``Δ = [q / sqrt(hidden_size), context] @
feature_context`` the decoder's reweighting of the features for this playlist (``context``: how
many seeds it has, by :data:`CONTEXT_STEPS`, and whether it has a title); masked candidates get
``-1e4``. ``Δ`` depends on the playlist, never on a candidate's identity, so what the decoder
learns there is which source to trust for what kind of request. ``forward`` is tensor-in /
tensor-out with no data-dependent Python control flow, so it exports to ONNX with dynamic batch /
seed / candidate axes.

With ``config.backbone="minilm"`` the decoder blocks are replaced by the first
``num_hidden_layers`` layers of a BERT-family encoder (``BertLayer``, e.g. MiniLM's, copied in by
:func:`load_minilm_backbone`): LLaRA's LLM role, here a pretrained sentence encoder reading the
same vector tokens. Its learned absolute position embeddings (positions of present tokens) and
embedding LayerNorm are kept, and attention is bidirectional over the present tokens, as the
encoder was trained.

Layout follows ``transformers.models.llama.modeling_llama``: blocks first, then
:class:`LlaraPreTrainedModel`, the bare :class:`LlaraModel` and the head
:class:`LlaraForCandidateScoring`.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput
from transformers.modeling_utils import PreTrainedModel
from transformers.models.bert.configuration_bert import BertConfig
from transformers.models.bert.modeling_bert import BertLayer
from transformers.utils import ModelOutput

from llarapp.models.llara.configuration_llara import LlaraConfig

#: Score given to masked candidates (finite, so ONNX runtimes and softmax stay NaN-free).
MASKED_SCORE = -1e4

#: Token types, indices into ``LlaraModel.token_type_embeddings``.
TITLE_TYPE, SEED_TYPE, QUERY_TYPE = 0, 1, 2

#: Names of the tensor inputs of ``LlaraForCandidateScoring.forward``, in order (for ONNX export).
INPUT_NAMES = (
    "title_vec",
    "title_mask",
    "seed_text",
    "seed_behavior",
    "seed_use_behavior",
    "seed_mask",
    "cand_text",
    "cand_behavior",
    "cand_use_behavior",
    "cand_features",
    "cand_mask",
)

#: Seed counts at which the context the feature reweighting reads steps up (``n >= t``, a
#: thermometer code): the challenge's categories of 0, 1, 5, 10, 25 and 100 seeds (the ranker
#: reads at most 50) each get their own code.
CONTEXT_STEPS = (1, 2, 8, 16, 41)
N_CONTEXT = len(CONTEXT_STEPS) + 1  # and whether the title is present


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------
class LlaraRMSNorm(nn.Module):
    """Root-mean-square layer norm (as ``LlamaRMSNorm``), computed in float32."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        """Create the norm.

        Args:
            hidden_size: Size of the last dimension.
            eps: Added to the mean square before the reciprocal square root.
        """
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Normalise ``(..., hidden_size)`` to unit RMS and scale by ``weight``."""
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        """Shape and epsilon, for ``repr``."""
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class LlaraRotaryEmbedding(nn.Module):
    """Default (unscaled) rotary position embedding; ``cos`` / ``sin`` are computed on the fly.

    ``inv_freq`` is a non-persistent buffer (not saved); :meth:`LlaraPreTrainedModel._init_weights`
    recomputes it, which ``from_pretrained`` relies on.
    """

    inv_freq: torch.Tensor

    def __init__(self, config: LlaraConfig) -> None:
        """Create the embedding for ``config.head_dim`` and ``config.rope_theta``."""
        super().__init__()
        self.config = config
        self.register_buffer("inv_freq", self.compute_inv_freq(config), persistent=False)

    @staticmethod
    def compute_inv_freq(config: LlaraConfig) -> torch.Tensor:
        """Inverse frequencies ``theta ** (-2i / head_dim)``, shape ``(head_dim // 2,)``."""
        dim = config.head_dim
        exponent = torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim
        return 1.0 / (config.rope_theta**exponent)

    @torch.no_grad()
    def forward(
        self, x: torch.Tensor, position_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosines and sines for ``position_ids``.

        Args:
            x: Any tensor of the target dtype / device.
            position_ids: ``(B, L)`` integer positions.

        Returns:
            ``(cos, sin)``, each ``(B, L, head_dim)`` in ``x.dtype``.
        """
        freqs = position_ids[..., None].to(torch.float32) * self.inv_freq  # (B, L, head_dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, L, head_dim)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Rotate half the hidden dims: ``(x1, x2) -> (-x2, x1)``."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply rotary position embeddings to queries and keys.

    Args:
        q: ``(B, n_heads, L, head_dim)`` queries.
        k: ``(B, n_kv_heads, L, head_dim)`` keys.
        cos: ``(B, L, head_dim)``.
        sin: ``(B, L, head_dim)``.

    Returns:
        The rotated ``(q, k)``, same shapes.
    """
    cos = cos.unsqueeze(1)  # (B, 1, L, head_dim): broadcast over heads
    sin = sin.unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Repeat key/value heads for grouped-query attention.

    Args:
        hidden_states: ``(B, n_kv_heads, L, head_dim)``.
        n_rep: ``n_heads // n_kv_heads``.

    Returns:
        ``(B, n_kv_heads * n_rep, L, head_dim)``; kv head ``j`` serves query heads
        ``j * n_rep .. (j + 1) * n_rep - 1`` (as ``torch.repeat_interleave`` on dim 1).
    """
    if n_rep == 1:
        return hidden_states
    batch, n_kv_heads, seq_len, head_dim = hidden_states.shape
    hidden_states = hidden_states[:, :, None, :, :].expand(
        batch, n_kv_heads, n_rep, seq_len, head_dim
    )
    return hidden_states.reshape(batch, n_kv_heads * n_rep, seq_len, head_dim)


class LlaraAttention(nn.Module):
    """Grouped-query self-attention with rotary embeddings, via SDPA.

    Uses ``torch.nn.functional.scaled_dot_product_attention`` with a boolean mask; key / value
    heads are repeated explicitly (:func:`repeat_kv`), which exports to ONNX.
    """

    def __init__(self, config: LlaraConfig, layer_idx: int) -> None:
        """Create the projections.

        Args:
            config: Model configuration.
            layer_idx: Index of the decoder layer holding this attention.
        """
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.attention_dropout = config.attention_dropout
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(
            config.hidden_size, self.num_key_value_heads * self.head_dim, bias=False
        )
        self.v_proj = nn.Linear(
            config.hidden_size, self.num_key_value_heads * self.head_dim, bias=False
        )
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Attend.

        Args:
            hidden_states: ``(B, L, hidden_size)``.
            position_embeddings: ``(cos, sin)``, each ``(B, L, head_dim)``.
            attention_mask: ``(B, 1, L, L)`` bool, True where query ``i`` may attend to key ``j``.
                Every row must have at least one True entry.

        Returns:
            ``(B, L, hidden_size)``.
        """
        input_shape = hidden_states.shape[:-1]  # (B, L)
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B,h,L,d)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B,kv,L,d)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B,kv,L,d)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        key_states = repeat_kv(key_states, self.num_key_value_groups)  # (B, h, L, d)
        value_states = repeat_kv(value_states, self.num_key_value_groups)  # (B, h, L, d)

        attn_output = nn.functional.scaled_dot_product_attention(
            query_states,
            key_states,
            value_states,
            attn_mask=attention_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )  # (B, h, L, d); default scale 1 / sqrt(head_dim)
        attn_output = attn_output.transpose(1, 2).reshape(*input_shape, -1)  # (B, L, h*d)
        return self.o_proj(attn_output)


class LlaraMLP(nn.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: LlaraConfig) -> None:
        """Create the projections (``hidden_size -> intermediate_size -> hidden_size``)."""
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., hidden_size) -> (..., hidden_size)``."""
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class LlaraDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm decoder block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``."""

    def __init__(self, config: LlaraConfig, layer_idx: int) -> None:
        """Create the block.

        Args:
            config: Model configuration.
            layer_idx: Index of this layer.
        """
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = LlaraAttention(config, layer_idx)
        self.mlp = LlaraMLP(config)
        self.input_layernorm = LlaraRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlaraRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Run the block.

        Args:
            hidden_states: ``(B, L, hidden_size)``.
            attention_mask: ``(B, 1, L, L)`` bool (see :class:`LlaraAttention`).
            position_embeddings: ``(cos, sin)``, each ``(B, L, head_dim)``.

        Returns:
            ``(B, L, hidden_size)``.
        """
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(hidden_states, position_embeddings, attention_mask)
        hidden_states = residual + self.dropout(hidden_states)

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + self.dropout(hidden_states)


class LlaraItemEmbedding(nn.Module):
    """Hybrid item token: ``RMSNorm(text_proj(text) + use_behavior * behavior_proj(behavior))``.

    Shared by seed tracks, candidates and (text-only) the playlist title.
    """

    def __init__(self, config: LlaraConfig) -> None:
        """Create the projections and the norm."""
        super().__init__()
        self.text_proj = nn.Linear(config.text_dim, config.hidden_size)
        self.behavior_proj = nn.Linear(config.behavior_dim, config.hidden_size)
        self.norm = LlaraRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        text: torch.Tensor,
        behavior: torch.Tensor | None = None,
        use_behavior: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed items.

        Args:
            text: ``(..., text_dim)`` text vectors.
            behavior: ``(..., behavior_dim)`` behavior vectors, or None for text-only tokens.
            use_behavior: ``(...)`` float flags in {0, 1} (required with ``behavior``). Where 0,
                the behavior vector is replaced by zeros *before* the projection and the
                projection (bias included) is multiplied by 0, so the token depends on the text
                alone, even if the behavior vector holds NaN / inf.

        Returns:
            ``(..., hidden_size)``.
        """
        hidden = self.text_proj(text)  # (..., H)
        if behavior is not None:
            if use_behavior is None:
                raise ValueError("`use_behavior` is required when `behavior` is given.")
            flag = use_behavior.to(hidden.dtype)[..., None]  # (..., 1)
            behavior = torch.where(flag > 0, behavior, torch.zeros_like(behavior))
            hidden = hidden + flag * self.behavior_proj(behavior)
        return self.norm(hidden)


class LlaraCandidateHead(nn.Module):
    """Small MLP mapping an item embedding to a candidate vector: ``fc2(silu(fc1(x)))``."""

    def __init__(self, config: LlaraConfig) -> None:
        """Create the two layers (``hidden_size -> hidden_size -> hidden_size``)."""
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.hidden_size)
        self.fc2 = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., hidden_size) -> (..., hidden_size)``."""
        return self.fc2(nn.functional.silu(self.fc1(x)))


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------
@dataclass
class LlaraRankerOutput(ModelOutput):
    """Output of :class:`LlaraForCandidateScoring`.

    Args:
        loss: Scalar listwise softmax cross-entropy, returned when ``labels`` are given.
        scores: ``(B, N)`` candidate scores, higher is better; ``-1e4`` for masked candidates.
    """

    loss: torch.Tensor | None = None
    scores: torch.Tensor | None = None


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------
class LlaraPreTrainedModel(PreTrainedModel):
    """Weight initialisation and ``save_pretrained`` / ``from_pretrained`` for LLaRA++ models."""

    config: LlaraConfig
    config_class = LlaraConfig
    base_model_prefix = "model"
    main_input_name = "seed_text"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["LlaraDecoderLayer", "BertLayer"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialise one module.

        The base class handles ``nn.Linear`` / ``nn.Embedding`` (normal with
        ``config.initializer_range``, zero bias) and RMS norms (ones); this adds the learned QUERY
        vector and the (non-persistent, hence re-created on load) rotary ``inv_freq`` buffer.
        """
        super()._init_weights(module)
        if isinstance(module, LlaraModel):
            init.normal_(module.query_embedding, mean=0.0, std=self.config.initializer_range)
        elif isinstance(module, LlaraRotaryEmbedding):
            init.copy_(module.inv_freq, LlaraRotaryEmbedding.compute_inv_freq(module.config))
        elif isinstance(module, LlaraForCandidateScoring):
            init.zeros_(module.feature_context)  # start (or load a ranker without it) as the head


class LlaraModel(LlaraPreTrainedModel):
    """Bare LLaRA++ decoder: ``[TITLE, SEEDS.., QUERY]`` vector tokens -> last hidden states."""

    def __init__(self, config: LlaraConfig) -> None:
        """Create embeddings, decoder layers and the final norm."""
        super().__init__(config)
        self.item_embeddings = LlaraItemEmbedding(config)
        self.token_type_embeddings = nn.Embedding(3, config.hidden_size)  # title / seed / query
        self.query_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.embed_dropout = nn.Dropout(config.hidden_dropout)
        if config.backbone == "minilm":
            bert = _bert_config(config)
            self.position_embeddings = nn.Embedding(bert.max_position_embeddings, bert.hidden_size)
            self.embed_norm = nn.LayerNorm(bert.hidden_size, eps=bert.layer_norm_eps)
            self.layers = nn.ModuleList(
                [BertLayer(bert, layer_idx=i) for i in range(config.num_hidden_layers)]
            )
        else:
            self.layers = nn.ModuleList(
                [LlaraDecoderLayer(config, i) for i in range(config.num_hidden_layers)]
            )
            self.rotary_emb = LlaraRotaryEmbedding(config)
        self.norm = LlaraRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False

        self.post_init()

    def forward(
        self,
        title_vec: torch.Tensor,
        title_mask: torch.Tensor,
        seed_text: torch.Tensor,
        seed_behavior: torch.Tensor,
        seed_use_behavior: torch.Tensor,
        seed_mask: torch.Tensor,
        return_dict: bool | None = None,
    ) -> BaseModelOutput | tuple[torch.Tensor, ...]:
        """Encode playlists.

        Args:
            title_vec: ``(B, text_dim)`` title text vectors.
            title_mask: ``(B,)`` 1 where the title is present, 0 where absent (then ignored).
            seed_text: ``(B, S, text_dim)`` seed text vectors, right-padded; ``S`` may be 0.
            seed_behavior: ``(B, S, behavior_dim)`` seed behavior vectors.
            seed_use_behavior: ``(B, S)`` 1 for hybrid tokens, 0 for text-only tokens.
            seed_mask: ``(B, S)`` 1 for real seeds, 0 for padding.
            return_dict: Return a :class:`~transformers.modeling_outputs.BaseModelOutput`
                (default: ``config.return_dict``) or a tuple.

        Returns:
            ``last_hidden_state`` ``(B, S + 2, hidden_size)`` after the final norm; position
            ``-1`` is the QUERY token. Hidden states at absent / padded positions are finite but
            meaningless.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        type_emb = self.token_type_embeddings.weight  # (3, H)

        title = self.item_embeddings(title_vec)[:, None, :] + type_emb[TITLE_TYPE]  # (B, 1, H)
        seeds = (
            self.item_embeddings(seed_text, seed_behavior, seed_use_behavior) + type_emb[SEED_TYPE]
        )  # (B, S, H)
        query = (self.query_embedding + type_emb[QUERY_TYPE]).expand_as(title)  # (B, 1, H)
        hidden_states = torch.cat([title, seeds, query], dim=1)  # (B, L = S + 2, H)

        present = torch.cat(
            [title_mask[:, None] > 0, seed_mask > 0, torch.ones_like(title_mask[:, None] > 0)],
            dim=1,
        )  # (B, L) bool; the QUERY token is always present
        # Positions count present tokens only, so padding never shifts the positions seen.
        position_ids = (torch.cumsum(present.to(torch.int64), dim=1) - 1).clamp(min=0)  # (B, L)

        if self.config.backbone == "minilm":
            hidden_states = self.embed_norm(hidden_states + self.position_embeddings(position_ids))
            hidden_states = self.embed_dropout(hidden_states)
            attention_mask = _attention_mask(present, causal=False)  # (B, 1, L, L)
            for layer in self.layers:
                hidden_states = layer(hidden_states, attention_mask)  # SDPA takes a bool mask
        else:
            hidden_states = self.embed_dropout(hidden_states)
            attention_mask = _attention_mask(present)  # (B, 1, L, L)
            position_embeddings = self.rotary_emb(hidden_states, position_ids)
            for decoder_layer in self.layers:
                hidden_states = decoder_layer(
                    hidden_states,
                    attention_mask=attention_mask,
                    position_embeddings=position_embeddings,
                )
        hidden_states = self.norm(hidden_states)  # (B, L, H)

        output = BaseModelOutput(last_hidden_state=hidden_states)
        return output if return_dict else output.to_tuple()


def _attention_mask(present: torch.Tensor, causal: bool = True) -> torch.Tensor:
    """Boolean SDPA mask hiding absent keys (and, when ``causal``, later ones), but always
    letting a token see itself.

    The diagonal keeps every row non-empty (an all-False row makes SDPA return NaN, which would
    then leak through later layers' value products); absent tokens only ever see themselves and
    (earlier) present tokens, and no present token sees them. ``causal=False`` is the MiniLM
    backbone's bidirectional mask.

    Args:
        present: ``(B, L)`` bool, True for tokens that exist.
        causal: Hide keys after the query.

    Returns:
        ``(B, 1, L, L)`` bool, True where query ``i`` may attend to key ``j``.
    """
    idx = torch.arange(present.shape[1], device=present.device)  # (L,)
    diagonal = idx[None, :] == idx[:, None]  # (L, L)
    visible = present[:, None, None, :] | diagonal  # (B, 1, L, L)
    return visible & (idx[None, :] <= idx[:, None]) if causal else visible


def _bert_config(config: LlaraConfig) -> BertConfig:
    """The ``BertConfig`` of a MiniLM backbone's layers (SDPA attention, LLaRA++ dropouts)."""
    bert = BertConfig(
        **{
            **config.backbone_config,
            "num_hidden_layers": config.num_hidden_layers,
            "hidden_dropout_prob": config.hidden_dropout,
            "attention_probs_dropout_prob": config.attention_dropout,
        }
    )
    bert._attn_implementation = "sdpa"
    return bert


#: The ``BertConfig`` keys a MiniLM backbone keeps (:func:`minilm_backbone_config`).
_BACKBONE_KEYS = (
    "hidden_size",
    "num_attention_heads",
    "num_hidden_layers",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "max_position_embeddings",
)


def minilm_backbone_config(path: str | Path) -> dict:
    """``backbone_config`` for the BERT-family encoder saved in ``path`` (e.g. MiniLM)."""
    bert = BertConfig.from_pretrained(str(path))
    return {key: getattr(bert, key) for key in _BACKBONE_KEYS}


@torch.no_grad()
def load_minilm_backbone(model: "LlaraModel", path: str | Path) -> None:
    """Copy a BERT-family encoder's pretrained weights (``path/model.safetensors``) into a
    ``backbone="minilm"`` model: its first ``num_hidden_layers`` layers, its position embeddings
    and its embedding LayerNorm.

    Raises:
        ValueError: If ``model`` is not a MiniLM-backbone model, or a weight is missing or has
            another shape.
    """
    from safetensors.torch import load_file

    if model.config.backbone != "minilm":
        raise ValueError(
            f"load_minilm_backbone needs backbone='minilm', got {model.config.backbone!r}"
        )
    weights = load_file(str(Path(path) / "model.safetensors"))
    targets = {
        "position_embeddings.weight": "embeddings.position_embeddings.weight",
        "embed_norm.weight": "embeddings.LayerNorm.weight",
        "embed_norm.bias": "embeddings.LayerNorm.bias",
    }
    for name, _ in model.layers.named_parameters():
        targets[f"layers.{name}"] = "encoder.layer." + name
    params = dict(model.named_parameters())
    for ours, theirs in targets.items():
        if theirs not in weights or weights[theirs].shape != params[ours].shape:
            found = tuple(weights[theirs].shape) if theirs in weights else "missing"
            expected = tuple(params[ours].shape)
            raise ValueError(f"{path}: weight {theirs} is {found}, expected {expected} for {ours}")
        params[ours].copy_(weights[theirs])


class LlaraForCandidateScoring(LlaraPreTrainedModel):
    """LLaRA++ ranker: scores ``N`` candidate tracks for each playlist."""

    def __init__(self, config: LlaraConfig) -> None:
        """Create the decoder, the candidate MLP and the feature head."""
        super().__init__(config)
        self.model = LlaraModel(config)
        self.cand_head = LlaraCandidateHead(config)
        self.feature_head = nn.Linear(config.n_features, 1)
        self.score_scale = 1.0 / math.sqrt(config.hidden_size)
        # learned gate on the transformer term; not a module, so _init_weights leaves it be
        self.interaction = nn.Parameter(torch.full((1,), float(config.interaction_init)))
        # the decoder's reweighting of the features per playlist (zero: the feature head alone)
        self.feature_context = nn.Parameter(
            torch.zeros(config.hidden_size + N_CONTEXT, config.n_features)
        )

        self.post_init()

    def forward(
        self,
        title_vec: torch.Tensor,
        title_mask: torch.Tensor,
        seed_text: torch.Tensor,
        seed_behavior: torch.Tensor,
        seed_use_behavior: torch.Tensor,
        seed_mask: torch.Tensor,
        cand_text: torch.Tensor,
        cand_behavior: torch.Tensor,
        cand_use_behavior: torch.Tensor,
        cand_features: torch.Tensor,
        cand_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> LlaraRankerOutput | tuple[torch.Tensor, ...]:
        """Score candidates (and compute the listwise loss when ``labels`` are given).

        Args:
            title_vec: ``(B, text_dim)`` title text vectors.
            title_mask: ``(B,)`` 1 where the title is present, 0 where absent.
            seed_text: ``(B, S, text_dim)`` seed text vectors, right-padded; ``S`` may be 0.
            seed_behavior: ``(B, S, behavior_dim)`` seed behavior vectors.
            seed_use_behavior: ``(B, S)`` 1 for hybrid tokens, 0 for text-only tokens.
            seed_mask: ``(B, S)`` 1 for real seeds, 0 for padding.
            cand_text: ``(B, N, text_dim)`` candidate text vectors.
            cand_behavior: ``(B, N, behavior_dim)`` candidate behavior vectors.
            cand_use_behavior: ``(B, N)`` 1 for hybrid tokens, 0 for text-only tokens.
            cand_features: ``(B, N, n_features)`` scalar features (e.g. retriever scores).
            cand_mask: ``(B, N)`` 1 for real candidates, 0 for padding.
            labels: Optional ``(B, N)`` float, > 0 for positives, < 0 for explicit negatives
                (a listener's dislike; :func:`hard_negative_loss`). Rows with neither are left
                out of the loss.
            return_dict: Return a :class:`LlaraRankerOutput` (default: ``config.return_dict``)
                or a tuple ``(loss, scores)`` / ``(scores,)``.

        Returns:
            ``scores`` ``(B, N)`` (``-1e4`` where ``cand_mask`` is 0) and, with ``labels``, the
            scalar ``loss``: the mean over rows with >= 1 positive of
            ``-(1 / n_pos) * sum_pos log_softmax(scores)[pos]``, plus
            :func:`hard_negative_loss` where a row has explicit negatives.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        query = self.query_vectors(
            title_vec, title_mask, seed_text, seed_behavior, seed_use_behavior, seed_mask
        )  # (B, H)
        cand = self.candidate_vectors(cand_text, cand_behavior, cand_use_behavior)  # (B, N, H)
        scores = self.score(query, cand, cand_features, cand_mask)  # (B, N)

        loss = None
        if labels is not None:
            loss = listwise_softmax_loss(scores, labels, cand_mask)
            if bool((labels < 0).any()):
                loss = loss + hard_negative_loss(scores, labels, cand_mask)

        output = LlaraRankerOutput(loss=loss, scores=scores)
        return output if return_dict else output.to_tuple()

    def query_vectors(
        self,
        title_vec: torch.Tensor,
        title_mask: torch.Tensor,
        seed_text: torch.Tensor,
        seed_behavior: torch.Tensor,
        seed_use_behavior: torch.Tensor,
        seed_mask: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, H + N_CONTEXT)``: the decoder's QUERY token for each playlist, then the
        playlist's context code (how many seeds, whether titled; arguments as ``forward``)."""
        q = self.model(
            title_vec,
            title_mask,
            seed_text,
            seed_behavior,
            seed_use_behavior,
            seed_mask,
            return_dict=True,
        ).last_hidden_state[:, -1, :]
        n_seeds = seed_mask.to(q.dtype).sum(dim=-1, keepdim=True)  # (B, 1)
        steps = torch.tensor(CONTEXT_STEPS, dtype=q.dtype, device=q.device)
        context = torch.cat([(n_seeds >= steps).to(q.dtype), title_mask.to(q.dtype)[:, None]], -1)
        return torch.cat([q, context], dim=-1)

    def candidate_vectors(
        self,
        cand_text: torch.Tensor,
        cand_behavior: torch.Tensor,
        cand_use_behavior: torch.Tensor,
    ) -> torch.Tensor:
        """``(..., H)``: candidate tracks as vectors. Depends on the track alone, so a server
        may compute it once for the whole catalogue and gather rows per request."""
        return self.cand_head(
            self.model.item_embeddings(cand_text, cand_behavior, cand_use_behavior)
        )

    def score(
        self,
        query: torch.Tensor,
        cand_vectors: torch.Tensor,
        cand_features: torch.Tensor,
        cand_mask: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, N)`` scores from ``query`` ``(B, H + N_CONTEXT)`` (:meth:`query_vectors`) and
        ``cand_vectors`` ``(B, N, H)``."""
        q = query[:, : self.config.hidden_size]
        scores = torch.matmul(cand_vectors, q[:, :, None])[..., 0] * self.score_scale
        scores = scores * self.interaction
        scores = scores + self.feature_head(cand_features)[..., 0]  # (B, N)
        reading = torch.cat([q * self.score_scale, query[:, self.config.hidden_size :]], dim=-1)
        reweight = reading @ self.feature_context  # (B, F)
        scores = scores + torch.matmul(cand_features, reweight[:, :, None])[..., 0]
        return scores.masked_fill(cand_mask <= 0, MASKED_SCORE)


def listwise_softmax_loss(
    scores: torch.Tensor, labels: torch.Tensor, cand_mask: torch.Tensor
) -> torch.Tensor:
    """Listwise softmax cross-entropy with possibly several positives per row.

    Args:
        scores: ``(B, N)`` scores, masked candidates already at ``-1e4`` (so they take no
            probability mass).
        labels: ``(B, N)`` float, > 0 for positives.
        cand_mask: ``(B, N)`` 1 for real candidates.

    Returns:
        Scalar: mean over rows with >= 1 unmasked positive of
        ``-(1 / n_pos) * sum_pos log_softmax(scores)[pos]``; 0 (still differentiable) when no
        row has a positive.
    """
    log_probs = torch.log_softmax(scores.to(torch.float32), dim=-1)  # (B, N)
    positive = ((labels > 0) & (cand_mask > 0)).to(log_probs.dtype)  # (B, N)
    n_pos = positive.sum(dim=-1)  # (B,)
    row_loss = -(log_probs * positive).sum(dim=-1) / n_pos.clamp(min=1.0)  # (B,)
    has_pos = (n_pos > 0).to(log_probs.dtype)  # (B,)
    return (row_loss * has_pos).sum() / has_pos.sum().clamp(min=1.0)


def hard_negative_loss(
    scores: torch.Tensor, labels: torch.Tensor, cand_mask: torch.Tensor
) -> torch.Tensor:
    """Explicit negatives (``labels < 0``: tracks a listener disliked in this context) score
    below every other candidate of their row.

    Returns:
        Scalar: the mean over rows with >= 1 unmasked negative of the mean over (negative,
        other candidate) pairs of ``softplus(score[negative] - score[other])``.
    """
    s = scores.to(torch.float32)
    negative = (labels < 0) & (cand_mask > 0)  # (B, N)
    other = (labels >= 0) & (cand_mask > 0)
    pairs = (negative[:, :, None] & other[:, None, :]).to(s.dtype)  # (B, N_neg, N_other)
    # the others are the yardstick, not what moves: a dislike must not lift the rest of the row
    pair_loss = torch.nn.functional.softplus(s[:, :, None] - s[:, None, :].detach()) * pairs
    row_loss = pair_loss.sum(dim=(1, 2)) / pairs.sum(dim=(1, 2)).clamp(min=1.0)
    has_neg = negative.any(dim=-1).to(s.dtype)
    return (row_loss * has_neg).sum() / has_neg.sum().clamp(min=1.0)


__all__ = [
    "CONTEXT_STEPS",
    "INPUT_NAMES",
    "MASKED_SCORE",
    "N_CONTEXT",
    "LlaraForCandidateScoring",
    "LlaraModel",
    "LlaraPreTrainedModel",
    "LlaraRankerOutput",
    "hard_negative_loss",
    "listwise_softmax_loss",
    "load_minilm_backbone",
    "minilm_backbone_config",
]
