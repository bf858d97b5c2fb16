"""Training: LLaRA++ stages, ranker curriculum, MLflow tracking."""
