"""Register: log the run to MLflow, register a version, set ``challenger`` / ``champion``."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def register_model(
    exported: Input[Model],
    evaluation: Input[Dataset],
    decision: Input[Artifact],
    tracking_uri: str,
    model_name: str,
    data_uri: str,
    train_config: dict,
    registration: Output[Artifact],
    promote: bool = True,
) -> NamedTuple("RegisterOutputs", [("version", str), ("promoted", bool)]):
    """Log params, test metrics, the HF model, the ONNX files and manifest; register a version.

    Library: :func:`llarapp.pipeline.registry.register_model`. The version gets the alias
    ``challenger``; with ``promote`` it also becomes ``champion`` when no canary is live (alias
    ``canary``); without (the continuous pipeline) it stays ``challenger`` and goes through the
    canary. Not cached: it changes the registry.

    Files in: ``exported`` (MODEL_DIR + ``onnx/manifest.json``), ``evaluation``
    (``evaluation.json``), ``decision`` (the gate's JSON; must have passed).

    Files out (``registration``, JSON): ``model_name``, ``version``, ``run_id``, ``model_uri``,
    ``source``, ``aliases``, ``promoted``, ``live_canary``, ``tracking_uri``.
    """
    import json
    from collections import namedtuple
    from pathlib import Path

    from llarapp.pipeline.registry import register_model as register
    from llarapp.pipeline.stages import EVALUATION_FILE
    from llarapp.pipeline.status import run_stage

    with run_stage("register_model"):
        result = register(
            exported.path,
            evaluation=json.loads((Path(evaluation.path) / EVALUATION_FILE).read_text()),
            gate=json.loads(Path(decision.path).read_text()),
            tracking_uri=tracking_uri,
            model_name=model_name,
            params={"data_uri": data_uri, "train_config": json.dumps(train_config)},
            promote=promote,
        )
        Path(registration.path).write_text(json.dumps(result, indent=2))
    registration.metadata.update({k: str(v) for k, v in result.items()})
    outputs = namedtuple("RegisterOutputs", ["version", "promoted"])
    return outputs(result["version"], result["promoted"])
