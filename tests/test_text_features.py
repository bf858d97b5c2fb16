"""Text features: real MiniLM vectors from the installed package, cached by text hash."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from llarapp.data.dataset import Track
from llarapp.data.ingest import ingest
from llarapp.data.synth import generate
from llarapp.features.text import DIM, MODEL_NAME, TextEncoder, embed_dataset


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
        return hashlib.sha1(f"{MODEL_NAME}\0{t}".encode()).digest()

    text = next(t for t in (f"song {i}" for i in range(100_000)) if digest(t).endswith(b"\0"))
    enc = TextEncoder(tmp_path, progress=False)
    first = enc.encode([text])
    enc.flush()
    again = TextEncoder(tmp_path, progress=False)
    again._model = _NoModel()
    np.testing.assert_array_equal(again.encode([text]), first)
