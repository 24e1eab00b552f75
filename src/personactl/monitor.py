"""Monitoring: how far activations lie along a persona direction.

The projection at layer l is h_l . v_l / |v_l|. Projecting the last prompt
token predicts a trait before anything is generated (Chen et al.); projecting
the averaged response measures what was expressed.
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import activations
from .generation import Prompt, format_prompts
from .models import Backbone
from .vectors import PersonaVector


def project(
    backbone: Backbone,
    vector: PersonaVector,
    prompts: Sequence[Prompt],
    responses: Sequence[str] | None = None,
    *,
    layers: Sequence[int] | None = None,
    positions: str | None = None,
    batch_size: int = 16,
) -> torch.Tensor:
    """Projections [n_prompts, n_layers_asked] onto the unit direction of each layer.

    Positions default to `prompt_last` without responses and `response_avg` with them.
    """
    vector.check_compatible(backbone)
    layers = list(range(1, backbone.n_layers + 1)) if layers is None else [backbone.check_layer(l) for l in layers]
    positions = positions or ("prompt_last" if responses is None else "response_avg")
    acts = activations.collect(
        backbone, format_prompts(backbone, prompts), responses, positions=positions, batch_size=batch_size  # type: ignore[arg-type]
    )
    return projections(acts, vector, layers)


def projections(acts: torch.Tensor, vector: PersonaVector, layers: Sequence[int]) -> torch.Tensor:
    """[n, len(layers)] projections of reduced activations [n, layers+1, hidden] on each layer's unit direction."""
    units = torch.stack([vector.unit(l) for l in layers])
    return (acts[:, list(layers)] * units[None]).sum(-1)
