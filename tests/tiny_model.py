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
