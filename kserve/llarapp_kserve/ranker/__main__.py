"""Run the ranker server.

``python -m llarapp_kserve.ranker --model_name ranker --storage_uri URI [--http_port 8080]``
"""

from llarapp_kserve.common import serve_one
from llarapp_kserve.ranker.model import RankerModel

if __name__ == "__main__":
    serve_one(RankerModel, "ranker")
