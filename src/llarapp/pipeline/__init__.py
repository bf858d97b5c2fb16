"""Library side of the Kubeflow pipelines: what the components in ``components/`` call.

Nothing here imports ``kfp``: the components (``components/<stage>/component.py``) are thin
wrappers over these functions and over the stage functions of the rest of the library, so every
stage runs, and is tested, without Kubeflow.

- :mod:`llarapp.pipeline.status` -- run a stage, record its time or why it failed.
- :mod:`llarapp.pipeline.stages` -- text-feature cache shards, evaluation against baselines
  with tables (Markdown + HTML), the ONNX export call.
- :mod:`llarapp.pipeline.gate` -- the promotion rule.
- :mod:`llarapp.pipeline.registry` -- MLflow: log, register, aliases, evaluate the champion.
- :mod:`llarapp.pipeline.deploy` -- the "deployed model" pointer the model server reads.
- :mod:`llarapp.pipeline.summary` -- the summary printed after a local run.
"""
