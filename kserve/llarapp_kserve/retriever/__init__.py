"""Retriever server: title / seed vectors -> top-N candidates with retriever features."""
