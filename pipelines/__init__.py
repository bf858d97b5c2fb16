"""KFP pipelines; each ``*_pipeline.py`` compiles itself to the ``.yaml`` beside it."""
