"""Evaluation: RecSys Challenge 2018 metrics and their aggregation over challenge cases."""
