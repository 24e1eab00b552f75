"""Training checkpoints: what a killed run needs to go on exactly where it stopped.

A checkpoint is a folder holding the trainable weights, the optimiser state,
the torch RNG state and `state.json` (step, losses, per-epoch records and a
fingerprint of the settings). It is written to a temporary folder and renamed,
so a kill while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._io import check_replaceable, replace_folder, temp_folder_beside
from .direction import AdapterError

STATE, WEIGHTS, OPTIMISER = "state.json", "trainable.safetensors", "optimiser.pt"


class CheckpointMismatch(AdapterError):
    """A checkpoint made with other settings or data than this run."""


@dataclass
class TrainState:
    """Progress of one training run (what `state.json` holds)."""

    fingerprint: str
    step: int = 0
    losses: list[float] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)


def save_checkpoint(folder: Path, model: torch.nn.Module, optimiser: torch.optim.Optimizer, state: TrainState) -> None:
    """Write the checkpoint atomically (temp folder, then rename over the old one)."""
    tmp = temp_folder_beside(folder)
    try:
        trainable = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trainable, str(tmp / WEIGHTS))
        torch.save({"optimiser": optimiser.state_dict(), "rng": torch.get_rng_state()}, tmp / OPTIMISER)
        (tmp / STATE).write_text(json.dumps(vars(state), indent=2), encoding="utf-8")
        replace_folder(tmp, folder, owned=STATE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_checkpoint(folder: Path) -> None:
    """Delete a checkpoint folder, but only one this tool wrote (it holds state.json)."""
    if folder.exists() or folder.is_symlink():
        check_replaceable(folder, STATE)
        shutil.rmtree(folder)


def load_checkpoint(folder: Path, model: torch.nn.Module, optimiser: torch.optim.Optimizer, fingerprint: str) -> TrainState | None:
    """Restore weights, optimiser and RNG from `folder` if it holds a checkpoint of this very run."""
    if not (folder / STATE).is_file():
        return None
    state = TrainState(**json.loads((folder / STATE).read_text(encoding="utf-8")))
    if state.fingerprint != fingerprint:
        raise CheckpointMismatch(f"{folder} is a checkpoint of a run with other settings or data: delete it, or train with --restart")
    saved = load_file(str(folder / WEIGHTS))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)
    extra = torch.load(folder / OPTIMISER, weights_only=True)
    optimiser.load_state_dict(extra["optimiser"])
    torch.set_rng_state(extra["rng"])
    return state
