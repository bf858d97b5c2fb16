"""Deploy: point the model server at the registered model."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def deploy(
    exported: Input[Model],
    registration: Input[Artifact],
    decision: Input[Artifact],
    serving_target: str,
    deployment: Output[Artifact],
) -> None:
    """Write the "deployed model" pointer the model server reads.

    Library: :func:`llarapp.pipeline.deploy.deploy`. ``serving_target``: a local folder
    (``llarapp serve`` reads ``runs/serving/current.json``), ``s3://bucket/prefix`` (the model
    folder is uploaded to ``prefix/models/v<N>/`` for a KServe ``storageUri`` and the pointer to
    ``prefix/current.json``), or empty (pointer only in ``deployment``). A version that did not
    become champion (a canary is live) goes to ``challenger.json`` instead. Not cached.

    Files in: ``exported`` (MODEL_DIR + ``onnx/``), ``registration`` and ``decision`` (JSON).

    Files out (``deployment``, JSON): the pointer -- ``model_name``, ``version``, ``alias``,
    ``model_uri``, ``storage_uri``, ``onnx_manifest``, ``mlflow_run_id``, ``tracking_uri``,
    ``metric``, ``score``, ``deployed_at``, ``written_to``.
    """
    import json
    from pathlib import Path

    from llarapp.pipeline.deploy import deploy as write_pointer
    from llarapp.pipeline.status import run_stage

    with run_stage("deploy"):
        result = write_pointer(
            exported.path,
            json.loads(Path(registration.path).read_text()),
            serving_target,
            gate=json.loads(Path(decision.path).read_text()),
            artifact_uri=exported.uri,
        )
        Path(deployment.path).write_text(json.dumps(result, indent=2))
    deployment.metadata.update({k: str(v) for k, v in result.items()})
