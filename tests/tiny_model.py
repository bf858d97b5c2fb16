"""The tiny LLaRA++ training config every test that needs a trained model shares."""

from llarapp.config import ALSConfig
from llarapp.models.projector import ProjectorConfig
from llarapp.training.llara import LlaraTrainConfig

TINY = LlaraTrainConfig(
    als=ALSConfig(factors=8, iterations=5),
    projector=ProjectorConfig(hidden=32, epochs=3),
    n_candidates=120,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    epochs=2,
    batch_size=16,
    max_valid_cases=40,
    hard_negatives=24,
    random_negatives=8,
)


def shuffled_copy(model_dir, out):
    """A copy of ``model_dir`` whose ranker weights are shuffled: another model (another
    ``model_version``) that ranks badly, the challenger canary tests roll back."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, out)
    weights = out / "ranker" / "model.safetensors"
    gen = torch.Generator().manual_seed(0)
    tensors = {
        k: v.flatten()[torch.randperm(v.numel(), generator=gen)].reshape(v.shape).contiguous()
        for k, v in load_file(weights).items()
    }
    save_file(tensors, weights)
    return out
