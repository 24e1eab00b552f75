"""The same vector through repeng, steering-vectors and personactl gives the same next-token logit shift.

Both ways: a file personactl exports, loaded and applied by the library's own code (`ControlVector.import_gguf`
+ `ControlModel`, `SteeringVector(...).apply`), against `personactl.steer` at the same layers and strength;
and a vector the library builds natively, imported by personactl, against the library applying it. A file
written one layer off (the tool's key = our layer index, the off-by-one the conventions invite) must fail the
same check. The libraries come from `make interop` (conftest's `interop` fixture). Measured on a tiny random
Llama (3 blocks, layers 1-2) and SmolLM2-135M (30 blocks, layers 10 and 20); docs/portable.md has the numbers.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from conftest import tiny_backbone

from personactl import PersonaVector, SteeringTerm, export_vector, import_vector, steer

COEF = 1.5
LAYERS = {"tiny": [1, 2], "smollm2": [10, 20]}


@pytest.fixture(scope="module")
def tiny_llama():
    return tiny_backbone("llama")


def _ids(backbone) -> torch.Tensor:
    return torch.tensor([backbone.encode([backbone.chat([{"role": "user", "content": "Tell me about the sea."}])])[0]])


def _last_logits(model, ids) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits[0, -1].double()


def _random_vector(backbone, layers: list[int], ids) -> PersonaVector:
    """A seeded random direction at each layer, as long as the residual stream there (so the shift is large)."""
    with torch.no_grad():
        states = backbone.model(ids, output_hidden_states=True).hidden_states
    generator = torch.Generator().manual_seed(0)
    directions = torch.zeros(backbone.n_layers + 1, backbone.hidden_size)
    for layer in layers:
        direction = torch.randn(backbone.hidden_size, generator=generator)
        directions[layer] = direction / direction.norm() * float(states[layer][0].norm(dim=-1).median())
    return PersonaVector(directions, trait="random", model=backbone.name)


def _one_layer_off(vector: PersonaVector) -> PersonaVector:
    """The same directions one row deeper: exported, our layer l lands at the tool's key l (instead of l-1)."""
    return PersonaVector(torch.roll(vector.directions, 1, dims=0), trait=vector.trait, model=vector.model)


def _personactl_shift(backbone, vector: PersonaVector, layers: list[int], ids, base) -> torch.Tensor:
    with steer(backbone, SteeringTerm(vector, layers, COEF)):
        return _last_logits(backbone.model, ids) - base


@contextmanager
def _repeng_control(repeng, model, control_vector):
    control = repeng.ControlModel(model, list(control_vector.directions))  # wraps model.layers[i]: undone below
    try:
        control.set_control(control_vector, COEF)
        yield control
    finally:
        control.reset()
        control.unwrap()


def _repeng_shift(repeng, backbone, control_vector, ids, base) -> torch.Tensor:
    with _repeng_control(repeng, backbone.model, control_vector):
        return _last_logits(backbone.model, ids) - base


def _steering_vectors_shift(backbone, steering_vector, ids, base) -> torch.Tensor:
    with steering_vector.apply(backbone.model, multiplier=COEF):
        return _last_logits(backbone.model, ids) - base


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.numpy(), b.numpy())[0, 1])


def _check(backbone, interop, layers, tmp_path) -> dict[str, float]:
    """Every correlation of the module docstring, for one model."""
    repeng, sv = interop.repeng, interop.steering_vectors
    ids = _ids(backbone)
    base = _last_logits(backbone.model, ids)
    vector = _random_vector(backbone, layers, ids)
    ours = _personactl_shift(backbone, vector, layers, ids, base)
    off_layers = [layer + 1 for layer in layers]
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # name -> (one shift, the shift it must equal)

    right = repeng.ControlVector.import_gguf(str(export_vector(vector, tmp_path / "r.gguf", "repeng", layers=layers, backbone=backbone)))
    wrong = repeng.ControlVector.import_gguf(str(export_vector(_one_layer_off(vector), tmp_path / "w.gguf", "repeng", layers=off_layers)))
    pairs["repeng file"] = (ours, _repeng_shift(repeng, backbone, right, ids, base))
    pairs["repeng file one layer off"] = (ours, _repeng_shift(repeng, backbone, wrong, ids, base))

    for name, offset, exported in (("steering-vectors file", 0, vector), ("steering-vectors file one layer off", 1, _one_layer_off(vector))):
        path = export_vector(exported, tmp_path / f"s{offset}.pt", "steering-vectors", layers=[layer + offset for layer in layers])
        saved = torch.load(path, weights_only=True)
        pairs[name] = (ours, _steering_vectors_shift(backbone, sv.SteeringVector(saved["layer_activations"], saved["layer_type"]), ids, base))

    native_cv = repeng.ControlVector(backbone.model_type, {layer - 1: vector.directions[layer].numpy() for layer in layers})
    native_cv.export_gguf(str(tmp_path / "native.gguf"))  # repeng's own writer
    imported = import_vector(tmp_path / "native.gguf", "repeng", backbone)
    pairs["repeng native, imported"] = (
        _repeng_shift(repeng, backbone, native_cv, ids, base),
        _personactl_shift(backbone, imported, imported.extra["layers"], ids, base),
    )
    native_sv = sv.SteeringVector({layer - 1: vector.directions[layer] for layer in layers}, "decoder_block")
    imported = import_vector(native_sv, "steering-vectors", backbone)
    pairs["steering-vectors native, imported"] = (
        _steering_vectors_shift(backbone, native_sv, ids, base),
        _personactl_shift(backbone, imported, imported.extra["layers"], ids, base),
    )
    assert torch.equal(_last_logits(backbone.model, ids), base)  # every library's hooks and wrappers are gone
    found = {name: _corr(a, b) for name, (a, b) in pairs.items()}
    print(backbone.name, {name: round(corr, 6) for name, corr in found.items()})
    print(backbone.name, "largest |shift difference|:", {name: float((a - b).abs().max()) for name, (a, b) in pairs.items() if "off" not in name})
    return found


def _assert_equivalent(found: dict[str, float]) -> None:
    for name, corr in found.items():
        if name.endswith("one layer off"):
            assert corr < 0.99, (name, corr)  # fails the check the right file passes
        else:
            assert corr >= 0.99, (name, corr)


def test_tiny_llama_steers_the_same_through_repeng_steering_vectors_and_personactl(tiny_llama, interop, tmp_path):
    _assert_equivalent(_check(tiny_llama, interop, LAYERS["tiny"], tmp_path))


@pytest.mark.slow
def test_smollm2_steers_the_same_through_repeng_steering_vectors_and_personactl(smollm2, interop, tmp_path):
    _assert_equivalent(_check(smollm2, interop, LAYERS["smollm2"], tmp_path))
