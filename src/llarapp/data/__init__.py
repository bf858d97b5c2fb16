"""Data stages: synthetic MPD, ingest (validate + quarantine), split into challenge cases."""
