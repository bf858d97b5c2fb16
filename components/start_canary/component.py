"""Start canary: send a share of the traffic to the challenger just deployed."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def start_canary(
    deployment: Input[Artifact],
    server_url: str,
    canary_percent: float,
    canary: Output[Artifact],
) -> bool:
    """Start the canary of the deployed challenger (``challenger.json``).

    Library: :func:`llarapp.pipeline.canary.start_canary`. With ``server_url``
    (``http://HOST:PORT`` of ``llarapp serve``): ``POST /v1/canary {"percent", "challenger"}``,
    then the registry's ``canary`` alias names the challenger's version. Empty (a cluster):
    nothing is started; ``canary`` holds the request a cluster controller carries out (the
    challenger's storage URI, model URI, version and percent). Not cached.

    Files in: ``deployment`` (the deploy stage's pointer JSON, alias ``challenger``).

    Files out (``canary``, JSON): ``started``, ``mode`` (``server`` or ``cluster``),
    ``percent``, ``challenger`` (storage URI), ``model_uri``, ``version``, ``model_name``,
    ``tracking_uri``, ``server_url``, ``server`` (its answer), ``canary_alias``, ``note``.
    Outputs whether the canary started.
    """
    import json
    from pathlib import Path

    from llarapp.pipeline.canary import start_canary as start
    from llarapp.pipeline.status import run_stage

    with run_stage("start_canary"):
        pointer = json.loads(Path(deployment.path).read_text())
        result = start(pointer, server_url, canary_percent)
        Path(canary.path).write_text(json.dumps(result, indent=2))
    canary.metadata.update({k: str(v) for k, v in result.items()})
    print(result["note"])
    return result["started"]
