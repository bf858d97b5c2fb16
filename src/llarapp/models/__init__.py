"""Recommenders behind one interface: ``fit`` / ``recommend`` / ``save`` / ``load``."""

from llarapp.models.base import Recommender, registered_models
from llarapp.models.baselines import ALS, ItemKNN, MostPopular, TitleKNN

__all__ = [
    "ALS",
    "ItemKNN",
    "LlaraPP",
    "MostPopular",
    "Recommender",
    "TitleKNN",
    "registered_models",
]
