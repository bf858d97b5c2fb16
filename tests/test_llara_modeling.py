"""Unit tests of the LLaRA++ ranker (config, model, loss, save/load, ONNX export); all tiny."""

import math
import warnings

import pytest
import torch

from llarapp.models.llara import (
    CONTEXT_STEPS,
    INPUT_NAMES,
    MASKED_SCORE,
    LlaraConfig,
    LlaraForCandidateScoring,
    LlaraModel,
    LlaraRankerOutput,
)

TEXT_DIM, BEHAVIOR_DIM, N_FEATURES, HIDDEN = 16, 8, 2, 32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add overhead (and thrash on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides) -> LlaraConfig:
    """The tiny test configuration, with ``overrides``."""
    kwargs = dict(
        text_dim=TEXT_DIM,
        behavior_dim=BEHAVIOR_DIM,
        n_features=N_FEATURES,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    kwargs.update(overrides)
    return LlaraConfig(**kwargs)


def tiny_model(seed: int = 0, **overrides) -> LlaraForCandidateScoring:
    """A freshly initialised tiny model in eval mode."""
    torch.manual_seed(seed)
    return LlaraForCandidateScoring(tiny_config(**overrides)).eval()


def make_inputs(batch: int, n_seeds: int, n_cands: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs with mixed behavior flags, all seeds / candidates present."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    def flags(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=g) > 0.5).float()

    return {
        "title_vec": randn(batch, TEXT_DIM),
        "title_mask": torch.ones(batch),
        "seed_text": randn(batch, n_seeds, TEXT_DIM),
        "seed_behavior": randn(batch, n_seeds, BEHAVIOR_DIM),
        "seed_use_behavior": flags(batch, n_seeds),
        "seed_mask": torch.ones(batch, n_seeds),
        "cand_text": randn(batch, n_cands, TEXT_DIM),
        "cand_behavior": randn(batch, n_cands, BEHAVIOR_DIM),
        "cand_use_behavior": flags(batch, n_cands),
        "cand_features": randn(batch, n_cands, N_FEATURES),
        "cand_mask": torch.ones(batch, n_cands),
    }


@torch.no_grad()
def scores_of(model: LlaraForCandidateScoring, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """``(B, N)`` scores (no grad)."""
    return model(**inputs).scores


# -- shapes and loss -----------------------------------------------------------------------------
def test_shapes_and_no_loss_without_labels() -> None:
    model = tiny_model()
    out = model(**make_inputs(3, 4, 5))
    assert isinstance(out, LlaraRankerOutput)
    assert out.loss is None
    assert out.scores.shape == (3, 5)
    assert torch.isfinite(out.scores).all()
    as_tuple = model(**make_inputs(3, 4, 5), return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1
    torch.testing.assert_close(as_tuple[0], out.scores)
    hidden = model.model(*list(make_inputs(3, 4, 5).values())[:6]).last_hidden_state
    assert hidden.shape == (3, 4 + 2, HIDDEN)


def test_loss_is_finite_scalar_and_gradients_flow() -> None:
    model = tiny_model().train()
    labels = torch.zeros(3, 5)
    labels[0, 1] = labels[1, 0] = labels[1, 3] = 1.0  # row 2 has no positive
    out = model(**make_inputs(3, 4, 5), labels=labels)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_loss_matches_listwise_definition() -> None:
    model = tiny_model()
    inputs = make_inputs(3, 2, 4)
    inputs["cand_mask"][0, 3] = 0.0
    labels = torch.tensor([[1.0, 0, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0]])  # [0, 3] is masked
    out = model(**inputs, labels=labels)
    logp = torch.log_softmax(out.scores, dim=-1)
    expected = (-(logp[0, 0] + logp[0, 2]) / 2 - logp[2, 1]) / 2  # row 1: no positive, left out
    torch.testing.assert_close(out.loss, expected)
    # the masked candidate takes no probability mass
    unmasked = torch.log_softmax(out.scores[0, :3], dim=-1)
    torch.testing.assert_close(logp[0, :3], unmasked)


def test_loss_decreases_on_toy_task() -> None:
    """Positive = the candidate that repeats one of the seeds."""
    model = tiny_model(hidden_dropout=0.0).train()
    g = torch.Generator().manual_seed(1)
    batch, n_seeds, n_cands = 16, 3, 6
    inputs = make_inputs(batch, n_seeds, n_cands, seed=1)
    inputs["cand_features"] = torch.zeros(batch, n_cands, N_FEATURES)  # no shortcut
    labels = torch.zeros(batch, n_cands)
    rows = torch.arange(batch)
    pos = torch.randint(0, n_cands, (batch,), generator=g)
    src = torch.randint(0, n_seeds, (batch,), generator=g)
    for key in ("text", "behavior", "use_behavior"):
        inputs[f"cand_{key}"][rows, pos] = inputs[f"seed_{key}"][rows, src]
    labels[rows, pos] = 1.0

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(n_cands), abs=0.1)  # near-uniform at init
    assert losses[-1] < 0.5 * losses[0], losses


# -- persistence and determinism -----------------------------------------------------------------
def test_save_pretrained_round_trip(tmp_path) -> None:
    model = tiny_model()
    inputs = make_inputs(2, 3, 4)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = LlaraForCandidateScoring.from_pretrained(tmp_path).eval()
    saved, reloaded = model.config.to_dict(), loaded.config.to_dict()
    saved.pop("_name_or_path"), reloaded.pop("_name_or_path")
    assert reloaded == saved
    torch.testing.assert_close(scores_of(loaded, inputs), scores_of(model, inputs), rtol=0, atol=0)
    bare = LlaraModel.from_pretrained(tmp_path)  # the base model loads from the head checkpoint
    assert isinstance(bare, LlaraModel)
    for name, tensor in bare.state_dict().items():
        assert torch.equal(tensor, model.model.state_dict()[name]), name


def test_the_feature_blend_steps_with_the_seed_count_and_nothing_else() -> None:
    """With the interaction gate shut, a candidate scores its features through the blend of
    its playlist's seed-count context: the head's, stepped by each ``CONTEXT_STEPS`` reached."""
    model = tiny_model(interaction_init=0.0)
    blends = torch.randn(len(CONTEXT_STEPS) + 1, N_FEATURES)
    with torch.no_grad():
        model.feature_head.weight.copy_(blends[0][None])
        model.feature_head.bias.fill_(0.5)
        model.feature_context[HIDDEN : HIDDEN + len(CONTEXT_STEPS)] = blends[1:] - blends[:-1]
    for n_seeds in (0, 1, 2, 5, 8, 15, 16, 40, 41, 50):
        inputs = make_inputs(3, n_seeds, 6, seed=n_seeds)
        context = sum(n_seeds >= t for t in CONTEXT_STEPS)
        want = inputs["cand_features"] @ blends[context] + 0.5
        torch.testing.assert_close(scores_of(model, inputs), want, rtol=1e-5, atol=1e-5)
        padded = inputs | {"seed_mask": torch.cat([inputs["seed_mask"], torch.zeros(3, 2)], 1)}
        for name in ("seed_text", "seed_behavior", "seed_use_behavior"):  # padding counts not
            extra = torch.zeros(3, 2, *inputs[name].shape[2:])
            padded[name] = torch.cat([inputs[name], extra], 1)
        torch.testing.assert_close(scores_of(model, padded), want, rtol=1e-5, atol=1e-5)


def test_a_ranker_saved_before_the_feature_context_loads_as_it_was(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    model = tiny_model()
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    save_file({k: v for k, v in load_file(weights).items() if k != "feature_context"}, weights)
    loaded = LlaraForCandidateScoring.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.feature_context, torch.zeros_like(model.feature_context))
    inputs = make_inputs(2, 3, 4)
    torch.testing.assert_close(scores_of(loaded, inputs), scores_of(model, inputs), rtol=0, atol=0)


def test_determinism_under_manual_seed() -> None:
    first, second = tiny_model(seed=5), tiny_model(seed=5)
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert not torch.equal(tiny_model(seed=6).model.query_embedding, first.model.query_embedding)
    inputs = make_inputs(2, 3, 4)
    first.train()
    second.train()
    torch.manual_seed(11)
    a = first(**inputs).scores
    torch.manual_seed(11)
    b = second(**inputs).scores
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # dropout included


# -- masking -------------------------------------------------------------------------------------
def test_padding_invariance() -> None:
    """Extra padded seeds and masked candidates (filled with garbage) change nothing else."""
    model = tiny_model()
    base = make_inputs(2, 3, 4, seed=2)
    garbage = make_inputs(2, 2, 3, seed=3)
    padded = dict(base)
    for key in ("seed_text", "seed_behavior", "seed_use_behavior"):
        padded[key] = torch.cat([base[key], garbage[key]], dim=1)
    padded["seed_mask"] = torch.cat([base["seed_mask"], torch.zeros(2, 2)], dim=1)
    # masked candidates in front of and behind the real ones
    order = [4, 0, 1, 5, 2, 3, 6]
    for key in ("cand_text", "cand_behavior", "cand_use_behavior", "cand_features"):
        padded[key] = torch.cat([base[key], garbage[key]], dim=1)[:, order]
    padded["cand_mask"] = torch.cat([base["cand_mask"], torch.zeros(2, 3)], dim=1)[:, order]

    expected = scores_of(model, base)
    got = scores_of(model, padded)
    real = [order.index(i) for i in range(4)]
    torch.testing.assert_close(got[:, real], expected, rtol=1e-5, atol=1e-5)
    assert (got[:, [order.index(i) for i in (4, 5, 6)]] == MASKED_SCORE).all()


def test_absent_title_is_ignored() -> None:
    model = tiny_model()
    inputs = make_inputs(2, 3, 4)
    inputs["title_mask"] = torch.tensor([0.0, 1.0])
    other = dict(inputs, title_vec=torch.randn(2, TEXT_DIM) * 10)
    a, b = scores_of(model, inputs), scores_of(model, other)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=1e-6)
    assert not torch.allclose(a[1], b[1])  # a present title matters


def test_text_only_tokens_ignore_behavior() -> None:
    model = tiny_model()
    inputs = make_inputs(2, 3, 4)
    inputs["seed_use_behavior"] = torch.zeros(2, 3)
    inputs["cand_use_behavior"] = torch.zeros(2, 4)
    other = dict(inputs)
    other["seed_behavior"] = torch.full((2, 3, BEHAVIOR_DIM), float("nan"))
    other["cand_behavior"] = torch.full((2, 4, BEHAVIOR_DIM), float("inf"))
    torch.testing.assert_close(scores_of(model, inputs), scores_of(model, other), rtol=0, atol=0)
    hybrid = dict(inputs, seed_use_behavior=torch.ones(2, 3), cand_use_behavior=torch.ones(2, 4))
    assert not torch.allclose(scores_of(model, hybrid), scores_of(model, inputs))


def test_no_seeds() -> None:
    model = tiny_model()
    inputs = make_inputs(2, 0, 4)
    scores = scores_of(model, inputs)
    assert scores.shape == (2, 4) and torch.isfinite(scores).all()
    # same as two padded seed slots; also without a title (QUERY then sees only itself)
    padded = make_inputs(2, 2, 4)
    padded.update({k: v for k, v in inputs.items() if not k.startswith("seed_")})
    padded["seed_mask"] = torch.zeros(2, 2)
    torch.testing.assert_close(scores_of(model, padded), scores, rtol=1e-5, atol=1e-5)
    inputs["title_mask"] = torch.zeros(2)
    assert torch.isfinite(scores_of(model, inputs)).all()
    labels = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0]])
    assert torch.isfinite(model(**inputs, labels=labels).loss)


# -- configuration -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"hidden_size": 30}, r"hidden_size.*\(30\).*num_attention_heads.*\(4\)"),
        ({"num_key_value_heads": 3}, r"num_attention_heads.*\(4\).*num_key_value_heads.*\(3\)"),
        ({"hidden_size": 12}, r"12 / 4 = 3 must be even"),
        ({"hidden_dropout": 1.0}, r"hidden_dropout=1\.0"),
        ({"attention_dropout": -0.1}, r"attention_dropout=-0\.1"),
        ({"text_dim": 0}, r"text_dim=0"),
        ({"num_hidden_layers": -1}, r"num_hidden_layers=-1"),
        ({"max_position_embeddings": 1}, r"max_position_embeddings=1"),
        ({"rms_norm_eps": 0.0}, r"rms_norm_eps=0\.0"),
    ],
)
def test_config_validation_names_the_numbers(overrides: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        tiny_config(**overrides)


def test_config_defaults_and_auto_registration(tmp_path) -> None:
    from transformers import AutoConfig

    config = LlaraConfig()
    assert (config.text_dim, config.behavior_dim, config.hidden_size) == (384, 128, 128)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 2, 32)
    assert config.model_type == "llara"
    tiny_config(rope_theta=500).save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, LlaraConfig) and loaded.rope_theta == 500.0


@pytest.mark.parametrize("kv_heads", [1, 4])
def test_gqa_variants(kv_heads: int) -> None:
    model = tiny_model(num_key_value_heads=kv_heads).train()
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.out_features == kv_heads * (HIDDEN // 4)
    labels = torch.zeros(2, 4)
    labels[:, 0] = 1.0
    out = model(**make_inputs(2, 3, 4), labels=labels)
    assert out.scores.shape == (2, 4) and torch.isfinite(out.loss)
    out.loss.backward()
    assert attn.k_proj.weight.grad.abs().sum() > 0


# -- ONNX ----------------------------------------------------------------------------------------
class _ScoresOnly(torch.nn.Module):
    """Positional tensors in, scores out: the export surface."""

    def __init__(self, model: LlaraForCandidateScoring) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(*inputs, return_dict=True).scores


def export_onnx(model: LlaraForCandidateScoring, path) -> None:
    """Export ``model``'s scores with dynamic batch / seed / candidate axes (opset 17)."""
    wrapper = _ScoresOnly(model).eval()  # a fresh module is in train mode: dropout would be traced
    example = make_inputs(2, 3, 5)
    dynamic_axes = {"title_vec": {0: "batch"}, "title_mask": {0: "batch"}}
    dynamic_axes.update({k: {0: "batch", 1: "seeds"} for k in INPUT_NAMES if k.startswith("seed")})
    dynamic_axes.update({k: {0: "batch", 1: "cands"} for k in INPUT_NAMES if k.startswith("cand")})
    dynamic_axes["scores"] = {0: "batch", 1: "cands"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation / tracer notes
        torch.onnx.export(
            wrapper,
            tuple(example.values()),
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=["scores"],
            dynamic_axes=dynamic_axes,
            opset_version=17,
            dynamo=False,
        )


@pytest.mark.parametrize("backbone", ["decoder", "minilm"])
def test_onnx_export_dynamic_axes_matches_onnxruntime(tmp_path, backbone: str) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = tiny_model() if backbone == "decoder" else tiny_minilm()
    path = tmp_path / "llara.onnx"
    export_onnx(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, n_seeds, n_cands in [(3, 6, 9), (1, 0, 4)]:
        inputs = make_inputs(batch, n_seeds, n_cands, seed=7)
        if n_seeds:
            inputs["seed_mask"][0, -2:] = 0.0
        inputs["cand_mask"][-1, 0] = 0.0
        inputs["title_mask"][0] = 0.0
        (got,) = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        expected = scores_of(model, inputs).numpy()
        assert got.shape == (batch, n_cands)
        assert abs(got - expected).max() <= 1e-4


# -- MiniLM backbone -----------------------------------------------------------------------------
#: A MiniLM-shaped backbone at test size (the real one is 6 layers of width 384).
TINY_BACKBONE = {
    "hidden_size": HIDDEN,
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "intermediate_size": 64,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 40,
}


def tiny_minilm(seed: int = 0, **overrides) -> LlaraForCandidateScoring:
    """A tiny ``backbone="minilm"`` model (random weights) in eval mode."""
    return tiny_model(seed, backbone="minilm", backbone_config=TINY_BACKBONE, **overrides)


def test_minilm_backbone_scores_masks_and_round_trips(tmp_path) -> None:
    model = tiny_minilm()
    assert type(model.model.layers[0]).__name__ == "BertLayer" and len(model.model.layers) == 2
    inputs = make_inputs(2, 3, 4)
    scores = scores_of(model, inputs)
    assert scores.shape == (2, 4) and torch.isfinite(scores).all()
    # padded seed slots change nothing; the encoder is bidirectional, so an absent title and
    # padding must be hidden from every token, not only from later ones
    padded = dict(inputs)
    garbage = make_inputs(2, 2, 4, seed=9)
    for key in ("seed_text", "seed_behavior", "seed_use_behavior"):
        padded[key] = torch.cat([inputs[key], garbage[key]], dim=1)
    padded["seed_mask"] = torch.cat([inputs["seed_mask"], torch.zeros(2, 2)], dim=1)
    torch.testing.assert_close(scores_of(model, padded), scores, rtol=1e-5, atol=1e-5)
    no_title = dict(inputs, title_mask=torch.zeros(2))
    other = dict(no_title, title_vec=torch.randn(2, TEXT_DIM) * 10)
    torch.testing.assert_close(
        scores_of(model, no_title), scores_of(model, other), rtol=0, atol=1e-6
    )
    assert torch.isfinite(scores_of(model, make_inputs(2, 0, 4))).all()

    model.save_pretrained(tmp_path)
    loaded = LlaraForCandidateScoring.from_pretrained(tmp_path).eval()
    assert loaded.config.backbone == "minilm" and loaded.config.backbone_config == TINY_BACKBONE
    torch.testing.assert_close(scores_of(loaded, inputs), scores, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"backbone": "llama"}, r"backbone.*'llama'"),
        ({"backbone": "minilm"}, r"backbone_config.*required"),
        (
            {"backbone": "minilm", "backbone_config": dict(TINY_BACKBONE, hidden_size=64)},
            r"hidden_size.*\(32\).*\(64\)",
        ),
        (
            {"backbone": "minilm", "backbone_config": TINY_BACKBONE, "num_hidden_layers": 4},
            r"num_hidden_layers.*\(4\).*3 layers",
        ),
        (
            {"backbone": "minilm", "backbone_config": dict(TINY_BACKBONE, num_attention_heads=2)},
            r"num_attention_heads.*\(4\).*\(2\)",
        ),
    ],
)
def test_backbone_validation(overrides: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        tiny_config(**overrides)


def test_load_minilm_backbone_copies_the_packaged_weights() -> None:
    from safetensors.torch import load_file

    from llarapp.models.llara import load_minilm_backbone, minilm_backbone_config
    from llarapp.text import model_path

    backbone = minilm_backbone_config(model_path())
    assert (backbone["hidden_size"], backbone["num_hidden_layers"]) == (384, 6)
    config = tiny_config(
        hidden_size=384,
        num_attention_heads=12,
        num_key_value_heads=12,
        num_hidden_layers=1,
        backbone="minilm",
        backbone_config=backbone,
    )
    model = LlaraForCandidateScoring(config)
    load_minilm_backbone(model.model, model_path())
    weights = load_file(str(model_path() / "model.safetensors"))
    layer = model.model.layers[0]
    assert torch.equal(
        layer.attention.self.query.weight, weights["encoder.layer.0.attention.self.query.weight"]
    )
    assert torch.equal(layer.output.dense.bias, weights["encoder.layer.0.output.dense.bias"])
    assert torch.equal(
        model.model.position_embeddings.weight, weights["embeddings.position_embeddings.weight"]
    )
    with pytest.raises(ValueError, match="backbone='minilm'"):
        load_minilm_backbone(tiny_model().model, model_path())
    with pytest.raises(ValueError, match=r"is \(512, 384\), expected \(40, 32\)"):
        load_minilm_backbone(tiny_minilm().model, model_path())
