"""Run the retriever server.

``python -m llarapp_kserve.retriever --model_name retriever --storage_uri URI [--http_port 8080]``
"""

from llarapp_kserve.common import serve_one
from llarapp_kserve.retriever.model import RetrieverModel

if __name__ == "__main__":
    serve_one(RetrieverModel, "retriever")
