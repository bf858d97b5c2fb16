"""Publish the compiled pipelines to Kubeflow Pipelines and schedule the continuous one.

``python -m pipelines.publish --host http://ml-pipeline.kubeflow:8888`` (the platform's Job
``kfp-publish``, manifests/platform/kfp-publish.yaml, runs it in the project image):

1. every compiled ``pipelines/*.yaml`` shipped in the package is uploaded under its
   ``pipelineInfo.name`` -- a new pipeline the first time, a new version (named after the
   package version and the file's digest) after that; an unchanged file is not uploaded again;
2. a recurring run of ``--recurring`` (default ``llarapp-continuous``, the continuous pipeline
   that watches drift and feedback and starts retraining) is created on ``--cron``, once: a
   recurring run of the same name in the experiment is left as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from importlib.metadata import version
from pathlib import Path

import yaml

CONTINUOUS = "llarapp-continuous"


def compiled_pipelines(folder: Path | str | None = None) -> dict[str, Path]:
    """``{pipelineInfo.name: file}`` of the compiled pipelines in ``folder`` (this package).

    Raises:
        ValueError: A YAML file without ``pipelineInfo.name``, or two files with one name.
    """
    folder = Path(folder) if folder else Path(__file__).resolve().parent
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*.yaml")):
        spec = next((d for d in yaml.safe_load_all(path.read_text()) if d), {})
        name = (spec.get("pipelineInfo") or {}).get("name")
        if not name:
            raise ValueError(f"{path}: no pipelineInfo.name; expected a compiled KFP pipeline")
        if name in found:
            raise ValueError(f"{path}: pipeline name {name!r} is also {found[name]}")
        found[name] = path
    return found


def version_name(path: Path) -> str:
    """``PACKAGE_VERSION-DIGEST``: one name per distinct compiled file."""
    return f"{version('llarapp')}-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}"


def publish(
    host: str,
    *,
    experiment: str = "llarapp",
    recurring: str | None = CONTINUOUS,
    cron: str = "0 0 * * * *",
    folder: Path | str | None = None,
) -> dict:
    """Upload the pipelines, schedule ``recurring``; returns what was done (ids by name)."""
    import kfp

    pipelines = compiled_pipelines(folder)
    if recurring is not None and recurring not in pipelines:
        raise ValueError(
            f"--recurring {recurring!r}: no compiled pipeline of that name; "
            f"expected one of {sorted(pipelines)}"
        )
    client = kfp.Client(host=host)
    done: dict = {"pipelines": {}}
    for name, path in pipelines.items():
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            pipeline_id = client.upload_pipeline(str(path), pipeline_name=name).pipeline_id
        versions = client.list_pipeline_versions(pipeline_id, page_size=100).pipeline_versions
        wanted = version_name(path)
        known = {v.display_name: v.pipeline_version_id for v in versions or []}
        if wanted not in known:
            uploaded = client.upload_pipeline_version(
                str(path), pipeline_version_name=wanted, pipeline_id=pipeline_id
            )
            known[wanted] = uploaded.pipeline_version_id
        done["pipelines"][name] = {"pipeline_id": pipeline_id, "version": wanted,
                                   "version_id": known[wanted]}  # fmt: skip
    if recurring is not None:
        experiment_id = client.create_experiment(experiment).experiment_id
        runs = client.list_recurring_runs(experiment_id=experiment_id, page_size=100)
        existing = [r for r in runs.recurring_runs or [] if r.display_name == recurring]
        if existing:
            done["recurring_run"] = {"id": existing[0].recurring_run_id, "created": False}
        else:
            entry = done["pipelines"][recurring]
            run = client.create_recurring_run(
                experiment_id,
                recurring,
                cron_expression=cron,
                pipeline_id=entry["pipeline_id"],
                version_id=entry["version_id"],
                enable_caching=False,
            )
            done["recurring_run"] = {"id": run.recurring_run_id, "created": True}
    return done


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m pipelines.publish", description=__doc__)
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://ml-pipeline:8888")
    p.add_argument("--experiment", default="llarapp")
    p.add_argument("--recurring", default=CONTINUOUS, help="the pipeline to schedule ('' none)")
    p.add_argument("--cron", default="0 0 * * * *", help="KFP cron, seconds first (hourly)")
    args = p.parse_args(argv)
    done = publish(
        args.host, experiment=args.experiment, recurring=args.recurring or None, cron=args.cron
    )
    print(json.dumps(done, indent=2))


if __name__ == "__main__":
    main()
