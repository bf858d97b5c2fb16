"""Evaluate: the trained model and the baselines on the same test cases, per category."""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate(
    data: Input[Dataset],
    splits: Input[Dataset],
    text: Input[Dataset],
    behavior: Input[Model],
    model: Input[Model],
    baselines: list,
    tune_max_cases: int,
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    table: Output[Markdown],
    table_html: Output[HTML],
) -> None:
    """Score LLaRA++ and the baselines (most popular, item kNN, ALS, title kNN) on test cases.

    Library: :func:`llarapp.pipeline.stages.evaluate_models` (around
    :func:`llarapp.evaluation.evaluate.evaluate` and the baselines' tuners).

    Files in: ``data``, ``splits`` (test cases score, validation cases tune the baselines),
    ``text`` (cache shard), ``behavior`` (``als/``: the tuned ALS baseline), ``model``
    (MODEL_DIR).

    Files out: ``evaluation`` (a folder: ``evaluation.json`` -- per model ``overall``,
    ``categories``, ``warm``, ``cold``, ``ms_per_case``; ``table.md``; ``table.html``;
    ``chart.png`` -- :func:`llarapp.evaluation.charts.quality_chart`);
    ``metrics`` (the candidate's overall and per-category scalars, each baseline's NDCG; also
    as JSON at its path);
    ``table`` (Markdown) and ``table_html`` (HTML): overall, then NDCG and R-precision per
    challenge category, shown in the KFP UI; the HTML opens with the chart (inline: the UI
    shows the artifact on its own).
    """
    import json
    import shutil
    from pathlib import Path

    from llarapp.evaluation.charts import png_img_tag, quality_chart
    from llarapp.pipeline.stages import evaluate_models, kfp_metrics, seed_text_cache
    from llarapp.pipeline.status import run_stage

    with run_stage("evaluate"):
        seed_text_cache(text.path)
        result = evaluate_models(
            data.path,
            splits.path,
            model.path,
            behavior.path,
            evaluation.path,
            baselines=baselines,
            tune_max_cases=tune_max_cases,
        )
        for name, value in kfp_metrics(result).items():
            metrics.log_metric(name, value)
        # a file at the path too: kfp.local's cache treats an output without one as missing
        Path(metrics.path).write_text(json.dumps(metrics.metadata, indent=2))
        shutil.copyfile(Path(evaluation.path) / "table.md", table.path)
        chart = quality_chart(result, Path(evaluation.path) / "chart.png", "LLaRA++ vs baselines")
        page = (Path(evaluation.path) / "table.html").read_text()
        img = png_img_tag(chart, "NDCG and R-precision per challenge category, warm vs cold")
        Path(table_html.path).write_text(page.replace("</h2>", "</h2>" + img, 1))
