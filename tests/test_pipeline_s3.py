"""S3 round trip through a real S3 server (nanio on loopback): MPD slices in through the ingest
component, the trained model out through the deploy stage and back, loaded and recommending."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from kfp import dsl

# the nanio server fixtures (started and stopped by PID there)
from test_storage_s3 import s3_env, s3_server  # noqa: F401

from components.ingest.component import ingest

pytestmark = pytest.mark.integration


def test_ingest_component_reads_s3(s3_env, tmp_path) -> None:  # noqa: F811
    from llarapp.data import storage
    from llarapp.data.ingest import ingest as ingest_local
    from llarapp.data.synth import generate

    generate(40, tmp_path / "mpd", seed=3, playlists_per_slice=15)
    uploaded = storage.upload_dir(tmp_path / "mpd", "s3://mpd-raw/slices")
    assert len(uploaded) == 3
    out = dsl.Dataset(name="data", uri=str(tmp_path / "from-s3"), metadata={})
    ingest.python_func(data_uri="s3://mpd-raw/slices", max_playlists=0, data=out)
    ingest_local(str(tmp_path / "mpd"), tmp_path / "from-disk")
    for name in ("playlists.parquet", "tracks.parquet", "interactions.parquet"):
        remote = pq.read_table(tmp_path / "from-s3" / name)
        local = pq.read_table(tmp_path / "from-disk" / name)
        assert remote.num_rows == local.num_rows > 0
        assert remote.column(0).to_pylist() == local.column(0).to_pylist()
    assert out.metadata["playlists_ok"] == 40


def test_deploy_uploads_model_and_pointer_and_it_loads_back(s3_env, tiny, tmp_path) -> None:  # noqa: F811
    from llarapp.data import storage
    from llarapp.data.dataset import load_cases
    from llarapp.models.base import Recommender
    from llarapp.pipeline.deploy import deploy, read_pointer

    data_dir, split_dir, model_dir, model = tiny
    registration = {"model_name": "llarapp", "version": "7", "promoted": True}
    result = deploy(model_dir, registration, "s3://serving/llarapp/")
    assert result["written_to"] == "s3://serving/llarapp/current.json"
    pointer = read_pointer("s3://serving/llarapp")
    assert pointer["storage_uri"] == "s3://serving/llarapp/models/v7"
    storage.download_dir(pointer["storage_uri"], tmp_path / "model")
    loaded = Recommender.load(tmp_path / "model")
    case = load_cases(data_dir, split_dir, "test")[0].case
    assert loaded.recommend(case, 20) == model.recommend(case, 20)
    report = json.loads((tmp_path / "model" / "train_report.json").read_text())
    assert report["train_cases"] == model.report["train_cases"]
