"""Training (fitting only): LLaRA++ stages, the ranker curriculum, MLflow tracking, baseline
tuning, and the roster that fits and evaluates every model of a run."""
