"""Gate: does the new model beat the baselines and the current champion by the margins?"""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def gate(
    data: Input[Dataset],
    splits: Input[Dataset],
    text: Input[Dataset],
    evaluation: Input[Dataset],
    model: Input[Model],
    tracking_uri: str,
    model_name: str,
    metric: str,
    margin_over_baselines: float,
    margin_over_champion: float,
    decision: Output[Artifact],
) -> bool:
    """Decide promotion: strictly beat the best baseline and the champion by the margins.

    Library: :func:`llarapp.pipeline.gate.decide`; the current ``champion`` (MLflow alias of
    ``model_name``) is downloaded and scored on the same test cases by
    :func:`llarapp.pipeline.registry.score_champion`, its ranker on ``model``'s stage (the
    split run's: the champion may have fitted these test playlists itself). Not cached: the
    registry changes.

    Files in: ``data``, ``splits``, ``text`` (cache shard), ``evaluation``
    (``evaluation.json``), ``model`` (the split run's MODEL_DIR).

    Files out: ``decision`` (JSON: ``passed``, ``reason``, ``metric``, ``candidate``,
    ``best_baseline``, ``best_baseline_score``, ``champion_version``, ``champion_score``,
    margins). Outputs ``passed`` (the pipeline's ``dsl.If``) and ``reason``.
    """
    import json
    from pathlib import Path

    from llarapp.pipeline.gate import GateConfig, decide
    from llarapp.pipeline.registry import score_champion
    from llarapp.pipeline.stages import EVALUATION_FILE, seed_text_cache
    from llarapp.pipeline.status import run_stage

    with run_stage("gate"):
        config = GateConfig(metric, margin_over_baselines, margin_over_champion)
        result = json.loads((Path(evaluation.path) / EVALUATION_FILE).read_text())
        seed_text_cache(text.path)
        champion = score_champion(
            tracking_uri, model_name, data.path, splits.path, metric, candidate=model.path
        )
        verdict = decide(result, config, champion)
        Path(decision.path).write_text(json.dumps(verdict.to_dict(), indent=2))
    decision.metadata.update(verdict.to_dict())
    print(verdict.reason)
    return verdict.passed
