"""Text features: real MiniLM vectors from the installed package, cached by text hash."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from llarapp.data.dataset import Track
from llarapp.data.ingest import ingest
from llarapp.data.synth import generate
from llarapp.features.text import embed_dataset
from llarapp.text import DIM, TextEncoder, feature_encoder_dir
from llarapp.text.encoder import KEY_PREFIXES


class _NoModel:
    def encode(self, *args, **kwargs):
        raise AssertionError("the cache should have answered without the model")


def test_vectors_are_normalised_and_semantic(tmp_path):
    enc = TextEncoder(tmp_path, progress=False)
    v = enc.encode(["chill lofi beats to study", "relaxing lofi study music", "death metal"])
    assert v.shape == (3, DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_cache_survives_a_new_encoder_and_never_embeds_twice(tmp_path):
    texts = ["Yellow by Coldplay", "Hey Ya! by OutKast", "Yellow by Coldplay"]
    enc = TextEncoder(tmp_path, progress=False)
    first = enc.encode(texts)
    assert not list(tmp_path.glob("emb-*.npz"))  # buffered until a flush
    enc.flush()
    assert len(list(tmp_path.glob("emb-*.npz"))) == 1
    again = TextEncoder(tmp_path, progress=False)
    again._model = _NoModel()
    np.testing.assert_array_equal(again.encode(texts), first)
    assert len(list(tmp_path.glob("emb-*.npz"))) == 1  # nothing new written
    assert again.encode([]).shape == (0, DIM)
    again.flush()
    assert len(list(tmp_path.glob("emb-*.npz"))) == 1


def test_track_text_format():
    assert Track("Yellow", "Coldplay").text == "Yellow by Coldplay"
    assert Track("Yellow", "Coldplay", album_name="Parachutes").text == (
        "Yellow by Coldplay from Parachutes"
    )


@pytest.mark.integration
def test_embed_dataset_writes_aligned_files(tmp_path):
    generate(8, tmp_path / "mpd", seed=1)
    data = tmp_path / "data"
    ingest(str(tmp_path / "mpd"), data)
    summary = embed_dataset(
        data, tmp_path / "text", TextEncoder(tmp_path / "cache", progress=False)
    )
    with np.load(tmp_path / "text" / "tracks.npz", allow_pickle=False) as z:
        assert z["vectors"].shape == (summary["tracks"], DIM)
        assert len(set(z["track_uris"].tolist())) == summary["tracks"]
    with np.load(tmp_path / "text" / "titles.npz", allow_pickle=False) as z:
        assert z["vectors"].shape == (summary["titles"], DIM)


def test_cache_round_trips_keys_whose_digest_ends_in_nul(tmp_path):
    def digest(t):
        return hashlib.sha1(f"{KEY_PREFIXES['onnx-qint8']}\0{t}".encode()).digest()

    text = next(t for t in (f"song {i}" for i in range(100_000)) if digest(t).endswith(b"\0"))
    enc = TextEncoder(tmp_path, progress=False)
    first = enc.encode([text])
    enc.flush()
    again = TextEncoder(tmp_path, progress=False)
    again._model = _NoModel()
    np.testing.assert_array_equal(again.encode([text]), first)


def test_backends_agree_but_never_share_cached_vectors(tmp_path):
    texts = ["Yellow by Coldplay from Parachutes", "Hey Ya! by OutKast", "chill lofi beats"]
    torch_enc = TextEncoder(tmp_path, progress=False, backend="torch")
    fp32 = torch_enc.encode(texts)
    torch_enc.flush()
    qint8_enc = TextEncoder(tmp_path, progress=False)
    assert qint8_enc.backend == "onnx-qint8" and qint8_enc.key(texts[0]) != torch_enc.key(texts[0])
    qint8_enc._model = _NoModel()
    with pytest.raises(AssertionError, match="cache should have answered"):
        qint8_enc.encode(texts[:1])  # the torch vectors in the shared folder are not its own
    qint8 = TextEncoder(tmp_path, progress=False).encode(texts)
    cos = (qint8 * fp32).sum(axis=1)
    assert cos.min() > 0.97, cos


def test_unknown_backend_is_refused():
    expected = r"backend='tf': expected one of \['onnx-qint8', 'torch'\]"
    with pytest.raises(ValueError, match=expected):
        TextEncoder(None, backend="tf")


def test_feature_encoder_is_built_once_and_keeps_the_callers_order():
    enc = TextEncoder(None, progress=False)
    texts = [f"track {'x' * i} by artist {i}" for i in range(40, 0, -1)]  # longest first
    model = enc.model
    settings = json.loads((feature_encoder_dir() / "encoder.json").read_text())
    assert settings["weight_type"] == "QInt8" and len(settings["excluded_nodes"]) == 6
    assert model.workers >= 1 and model.batch_size == 1
    forward = enc.embed(texts)
    np.testing.assert_array_equal(enc.embed(texts[::-1])[::-1], forward)
    model.workers = 1
    np.testing.assert_array_equal(enc.embed(texts), forward)
    # one text per pass: a text's vector never depends on the texts embedded with it
    alone = np.concatenate([enc.embed([t]) for t in texts[:3]])
    np.testing.assert_array_equal(alone, forward[:3])
    model.batch_size = 8  # QInt8 scales activations per batch: batches move vectors a little
    batched = enc.embed(texts)
    assert (batched * forward).sum(axis=1).min() > 0.97 and not np.array_equal(batched, forward)
