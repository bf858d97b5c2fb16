"""LLaRA++ KServe model servers: ``encoder``, ``retriever``, ``ranker``, and the local server.

Each server is a small package (``__main__.py`` + ``model.py``) around one step of
:class:`llarapp.serving.engine.ServingEngine`::

    python -m llarapp_kserve.encoder   --model_name encoder   --storage_uri /mnt/models
    python -m llarapp_kserve.retriever --model_name retriever --storage_uri /mnt/models
    python -m llarapp_kserve.ranker    --model_name ranker    --storage_uri models:/llarapp@champion

``python -m llarapp_kserve --model DIR`` (what ``llarapp serve`` runs) hosts all three in one
``kserve.ModelServer`` on 127.0.0.1, plus ``POST /v1/recommend`` (walks the InferenceGraph
champion Sequence of ``manifests/base/inference-graph.yaml``) and ``POST /v1/feedback``; with
``--challenger DIR`` it hosts a second model too and splits ``/v1/recommend`` between them
(``GET`` / ``POST /v1/canary``).
"""
