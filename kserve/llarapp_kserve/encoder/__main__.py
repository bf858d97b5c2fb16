"""Run the encoder server.

``python -m llarapp_kserve.encoder --model_name encoder --storage_uri URI [--http_port 8080]``
"""

from llarapp_kserve.common import serve_one
from llarapp_kserve.encoder.model import EncoderModel

if __name__ == "__main__":
    serve_one(EncoderModel, "encoder")
