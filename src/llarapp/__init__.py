"""LLaRA++: cold-start playlist continuation (text + behavior + a compact ranker)."""

__version__ = "0.1.0"
