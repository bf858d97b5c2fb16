"""Features: MiniLM text vectors and ALS behavior vectors."""
