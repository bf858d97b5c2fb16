"""Encoder server: a person's request -> MiniLM title / seed vectors and catalogue indices."""
