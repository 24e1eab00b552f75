"""Activation steering vs LoRA steering: latency and geometry, side by side.

Latency: tokens per second for unsteered generation, the activation hook, the
LoRA direction merged into the weights and the LoRA unmerged (runtime), in one
process with the same prompts and a forced length. Geometry: the mean shift
that merging dW causes in the residual stream at every layer, and its cosine
with the persona vector at that layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import activations
from .._plot import two_panels
from ..errors import OptionError
from ..generation import Prompt, format_prompts, generate
from ..models import Backbone
from ..steering import SteeringTerm
from ..vectors import PersonaVector
from .direction import LoRADirection, merged
from .runtime import runtime

if TYPE_CHECKING:
    from ..evaluate import SweepConfig


@dataclass(frozen=True)
class Latency:
    mode: str
    tokens_per_second: float
    ratio_to_unsteered: float


@dataclass(frozen=True)
class LayerShift:
    layer: int
    shift_norm: float
    cosine_with_vector: float


def latencies(
    backbone: Backbone,
    prompts: Sequence[Prompt],
    vector: PersonaVector,
    layer: int,
    lora_folder: str | Path,
    *,
    coef: float = 1.0,
    new_tokens: int = 32,
    repeats: int = 3,
) -> list[Latency]:
    """Best-of-`repeats` tokens/s per mode, every mode generating exactly `new_tokens` per prompt.

    The modes are interleaved round by round (A B C D, A B C D, ...) so drift in
    the machine's speed hits them alike; entering a mode is not timed.
    """
    direction = LoRADirection.load(lora_folder)
    texts = format_prompts(backbone, prompts)
    hook = [SteeringTerm(vector, layer, coef)]
    modes: dict[str, tuple[Callable[[], AbstractContextManager[object]], list[SteeringTerm]]] = {
        "unsteered": (nullcontext, []),
        "activation hook": (nullcontext, hook),
        "LoRA merged": (lambda: merged(backbone, (direction, coef)), []),
        "LoRA unmerged": (lambda: runtime(backbone, lora_folder, coef), []),
    }
    best = {mode: float("inf") for mode in modes}
    for round_ in range(repeats + 1):  # round 0 warms every mode up
        for mode, (context, steering) in modes.items():
            with context():
                start = time.perf_counter()
                generate(backbone, texts, steering=steering, max_new_tokens=new_tokens, min_new_tokens=new_tokens, batch_size=len(texts))
                elapsed = time.perf_counter() - start
            if round_:
                best[mode] = min(best[mode], elapsed)
    speeds = {mode: len(texts) * new_tokens / seconds for mode, seconds in best.items()}
    return [Latency(mode, tps, tps / speeds["unsteered"]) for mode, tps in speeds.items()]


def residual_shift(
    backbone: Backbone, prompts: Sequence[Prompt], vector: PersonaVector, lora_folder: str | Path, coef: float = 1.0
) -> list[LayerShift]:
    """Mean over prompts of h(dW merged) - h(base) per layer (averaged over prompt tokens), vs the vector."""
    direction = LoRADirection.load(lora_folder)
    texts = format_prompts(backbone, prompts)
    base = activations.collect(backbone, texts, positions="all_avg")
    with merged(backbone, (direction, coef)):
        steered = activations.collect(backbone, texts, positions="all_avg")
    shift = (steered - base).mean(0)  # [layers+1, hidden]
    cosine = torch.nn.functional.cosine_similarity(shift, vector.directions, dim=-1)
    return [LayerShift(l, float(shift[l].norm()), float(cosine[l])) for l in range(1, backbone.n_layers + 1)]


def plot_geometry(shifts: Sequence[LayerShift], path: str | Path) -> Path:
    """Shift norm and cosine with the persona vector per layer."""
    return two_panels(
        path,
        "Residual-stream shift induced by the LoRA persona direction",
        [s.layer for s in shifts],
        ([s.shift_norm for s in shifts], "|mean shift| from dW"),
        ([s.cosine_with_vector for s in shifts], "cosine with persona vector"),
        "layer (hidden_states index)",
        zero_line=True,
    )


@dataclass
class Comparison:
    """Everything `personactl compare` measured, and where it was written."""

    run_dir: Path
    layer: int
    summary: list[dict]
    latency: list[Latency]
    geometry: list[LayerShift]
    written: list[Path]
    verdicts: list = field(default_factory=list)  # verdicts.Verdict per method


def compare(config: SweepConfig, out_dir: str | Path = "runs", backbone: Backbone | None = None, n_timing_prompts: int = 8) -> Comparison:
    """Sweep `vector` and `lora` on the same questions (one report), then time and compare geometry.

    `config` is a SweepConfig with `lora` set; its methods are replaced by
    ["vector", "lora"] so both share every other setting.
    """
    import json  # noqa: PLC0415
    from dataclasses import asdict  # noqa: PLC0415

    from .._io import write_text_atomic  # noqa: PLC0415
    from ..experiment import run  # noqa: PLC0415
    from ..generation import chat_prompt  # noqa: PLC0415

    lora = config.lora
    if lora is None:
        raise OptionError("compare needs a persona direction: set the config's lora to a `personactl lora extract` folder")
    specs = [config.layers] if isinstance(config.layers, str) else config.layers
    if any(isinstance(spec, str) and spec != "auto" for spec in specs):
        raise OptionError(f"compare steers at one layer: give layer numbers or 'auto', not the blend {config.layers!r}")
    config = config.model_copy(update={"methods": ["vector", "lora"]})
    result = run(config, out_dir, backbone=backbone)
    prep = result.prepared
    layer = result.layers[0]
    assert isinstance(layer, int)  # no blend, checked above
    prompts = [chat_prompt(q) for q in prep.trait.eval_questions[:n_timing_prompts]]
    timing = latencies(prep.backbone, prompts, prep.vector, layer, lora)
    shifts = residual_shift(prep.backbone, prompts, prep.vector, lora)
    figure = plot_geometry(shifts, result.run_dir / "figures" / "geometry.png")
    data = {"layer": layer, "latency": [asdict(t) for t in timing], "geometry": [asdict(s) for s in shifts]}
    written = [write_text_atomic(result.run_dir / "compare.json", json.dumps(data, indent=2)), figure]
    return Comparison(result.run_dir, layer, result.summary, timing, shifts, written + ([result.report] if result.report else []), result.verdicts)
