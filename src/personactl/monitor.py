"""Monitoring: how far activations lie along a persona direction.

The projection at layer l is h_l . v_l / |v_l|. Projecting the last prompt
token predicts a trait before anything is generated (Chen et al.); projecting
the averaged response measures what was expressed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import activations
from .capture import capture_for
from .errors import OptionError
from .generation import Prompt, format_prompts, generate
from .models import Backbone
from .steering import SteeringTerm
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
    checked = check_request(len(prompts), responses, positions)
    vector.check_compatible(backbone)
    layers = list(range(1, backbone.n_layers + 1)) if layers is None else [backbone.check_layer(l) for l in layers]
    acts = activations.collect(backbone, format_prompts(backbone, prompts), responses, positions=checked, batch_size=batch_size)
    return projections(acts, vector, layers)


def project_generated(
    backbone: Backbone,
    vector: PersonaVector,
    prompts: Sequence[Prompt],
    *,
    layers: Sequence[int] | None = None,
    steering: Sequence[SteeringTerm] = (),
    max_new_tokens: int = 64,
    batch_size: int = 16,
) -> tuple[list[str], torch.Tensor]:
    """Greedy answers to `prompts` and their projections [n_prompts, n_layers_asked] (response_avg; NaN for an empty
    answer), read while the answers are generated: one pass (`capture`). A model without a chat template answers,
    then is read again."""
    vector.check_compatible(backbone)
    layers = list(range(1, backbone.n_layers + 1)) if layers is None else [backbone.check_layer(l) for l in layers]
    capture = capture_for(backbone, "response_avg")
    answers = generate(backbone, prompts, steering=steering, max_new_tokens=max_new_tokens, batch_size=batch_size, capture=capture)
    kept = [i for i, answer in enumerate(answers) if answer.strip()]
    if capture is not None:
        acts = capture.result()[kept]
    else:
        texts = format_prompts(backbone, [prompts[i] for i in kept])
        acts = activations.collect(backbone, texts, [answers[i] for i in kept], positions="response_avg", batch_size=batch_size)
    scores = torch.full((len(answers), len(layers)), float("nan"))
    scores[kept] = projections(acts, vector, layers)
    return answers, scores


def check_request(n_prompts: int, responses: Sequence[str] | None, positions: str | None) -> activations.Positions:
    """The positions to use, after checking what needs no model (call it before loading one): OptionError if wrong."""
    try:
        checked = activations.checked_positions(positions or ("prompt_last" if responses is None else "response_avg"))
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    if responses is not None:
        if len(responses) != n_prompts:
            raise OptionError(f"{len(responses)} responses for {n_prompts} prompts: give one response per prompt")
        empty = [i + 1 for i, r in enumerate(responses) if not r.strip()]
        if empty and checked == "response_avg":
            raise OptionError(
                f"response {empty[0]} is empty: response_avg averages the response tokens, so give its text (or use --positions prompt_last)"
            )
    return checked


def projections(acts: torch.Tensor, vector: PersonaVector, layers: Sequence[int]) -> torch.Tensor:
    """[n, len(layers)] projections of reduced activations [n, layers+1, hidden] on each layer's unit direction."""
    units = torch.stack([vector.unit(l) for l in layers])
    return (acts[:, list(layers)] * units[None]).sum(-1)


def stored_projections(vector: PersonaVector) -> tuple[list[int], torch.Tensor, torch.Tensor] | None:
    """(layers, pos, neg) projections [n_pairs, len(layers)] of the extraction's answers (`extraction.vector_from_activations`
    keeps them), if this vector has them."""
    data = vector.extra.get("projections")
    if not data:
        return None
    return data["layers"], torch.tensor(data["pos"]), torch.tensor(data["neg"])
