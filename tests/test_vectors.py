import pickle

import numpy as np
import pytest
import torch

from personactl import IncompatibleVectorError, PersonaVector, VectorFileError, load_vector


def _vector(backbone=None, layers=4, hidden=48):
    torch.manual_seed(0)
    if backbone is not None:
        layers, hidden = backbone.n_layers + 1, backbone.hidden_size
    return PersonaVector(torch.randn(layers, hidden), trait="pirate", model="tiny", separation=[0.5] * layers, n_samples=7)


def test_safetensors_round_trip_keeps_directions_and_metadata(tmp_path, tiny):
    vector = _vector(tiny)
    path = vector.save(tmp_path / "v.safetensors")
    loaded = load_vector(path, backbone=tiny)
    assert torch.equal(loaded.directions, vector.directions)
    assert (loaded.trait, loaded.model, loaded.n_samples) == ("pirate", "tiny", 7)
    assert loaded.separation == pytest.approx(vector.separation)
    assert loaded.fingerprint() == vector.fingerprint()
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temp file


@pytest.mark.parametrize("fmt", ["pt", "npy"])
def test_plain_tensor_interop(tmp_path, fmt):
    vector = _vector()
    path = vector.save_tensor(tmp_path / f"v.{fmt}", fmt)
    assert torch.equal(load_vector(path).directions, vector.directions)


def test_single_direction_needs_a_layer(tmp_path, tiny):
    path = tmp_path / "one.pt"
    torch.save(torch.ones(tiny.hidden_size), path)
    with pytest.raises(VectorFileError, match="--layer"):
        load_vector(path)
    placed = load_vector(path, backbone=tiny, layer=2)
    assert placed.directions[2].sum() == tiny.hidden_size and placed.directions[1].abs().sum() == 0


def test_hidden_size_mismatch_is_refused(tmp_path, tiny):
    path = _vector(layers=tiny.n_layers + 1, hidden=tiny.hidden_size + 1).save(tmp_path / "v.safetensors")
    with pytest.raises(IncompatibleVectorError, match="hidden size"):
        load_vector(path, backbone=tiny)


def test_layer_count_mismatch_is_refused(tmp_path, tiny):
    path = _vector(layers=tiny.n_layers + 3, hidden=tiny.hidden_size).save(tmp_path / "v.safetensors")
    with pytest.raises(IncompatibleVectorError, match="layers"):
        load_vector(path, backbone=tiny)


def test_corrupt_file_is_refused(tmp_path):
    path = _vector().save(tmp_path / "v.safetensors")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(VectorFileError, match="not a readable safetensors"):
        load_vector(path)


class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump(Payload(), fh)
    with pytest.raises(VectorFileError, match="refusing"):
        load_vector(path)
    assert "pwned" not in capsys.readouterr().out


def test_npy_pickle_is_refused(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(VectorFileError, match="refusing"):
        load_vector(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(VectorFileError, match="not found"):
        load_vector(tmp_path / "nope.safetensors")
    odd = tmp_path / "v.bin"
    odd.write_bytes(b"x")
    with pytest.raises(VectorFileError, match="--format"):
        load_vector(odd)


def test_arithmetic_composes_vectors():
    a, b = _vector(), _vector() * 2
    assert torch.allclose((a + b).directions, 3 * a.directions)
    assert torch.allclose((b - a).directions, a.directions)
    assert torch.allclose((-a / 2).directions, -0.5 * a.directions)
    assert (a + b).trait == "pirate+pirate"
    with pytest.raises(IncompatibleVectorError):
        a + _vector(layers=3)
