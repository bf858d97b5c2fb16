"""Export: MODEL_DIR -> MODEL_DIR + ``onnx/`` (optimized, quantized variants and manifest)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def export_onnx(
    model: Input[Model],
    data: Input[Dataset],
    splits: Input[Dataset],
    export_format: str,
    export_options: dict,
    exported: Output[Model],
) -> None:
    """Export the ranker (and encoder) to ONNX with parity checks; pick the serving variant.

    Library: :func:`llarapp.pipeline.stages.export_model_dir`, which runs
    :func:`llarapp.export.onnx_export.export_onnx` with ``ExportConfig(**export_options)`` for
    ``export_format="onnx"``; ``"none"`` serves PyTorch (manifest only).

    Files in: ``model`` (MODEL_DIR), ``data`` and ``splits`` (calibration and parity cases).

    Files out (``exported``, a folder): a copy of MODEL_DIR plus ``onnx/``: the ``.onnx``
    variants and ``manifest.json`` (chosen variant, provider, threads, parity figures, input
    and output names and shapes) that the model servers read.
    """
    from llarapp.pipeline.stages import export_model_dir
    from llarapp.pipeline.status import run_stage

    with run_stage("export_onnx"):
        manifest = export_model_dir(
            model.path,
            exported.path,
            export_format=export_format,
            data_dir=data.path,
            split_dir=splits.path,
            options=export_options,
        )
    exported.metadata["chosen"] = str(manifest.get("chosen", ""))
    exported.metadata["mlflow_run_id"] = model.metadata.get("mlflow_run_id", "")
