"""The methods a bench compares, each as the sweep method that generates it, where it steers and the strengths tried.

Every entry is tuned by the same rule on the tuning questions (`tuning.choose`): the strength with the largest mean
trait whose mean coherence stays at or above the floor; a defence (`cap`) takes the smallest trait instead. The
grids are fixed here, in each method's own unit, so no method gets a finer search than another by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..layer_selection import LayerSpec

Goal = Literal["baseline", "raise", "lower"]
VECTOR_GRID = (1.0, 2.0, 3.0, 4.0, 6.0)  # coefficient c adds c * v[l]; the layer probe steers at 2 (layer_selection.PROBE_COEF)


@dataclass(frozen=True)
class Entry:
    """One bench row: `method` (a sweep method) at `layer` ("auto", "auto:K" or 0 for none), over `grid`."""

    label: str
    method: str
    layer: LayerSpec
    grid: tuple[float, ...]  # empty: one strength per instruction pair of the trait (the prompt baseline)
    goal: Goal
    needs: tuple[str, ...]  # set-up it pays for: extraction, layers, adapter
    about: str


ENTRIES: dict[str, Entry] = {
    e.label: e
    for e in (
        Entry("none", "prompt", 0, (0.0,), "baseline", (), "the plain model, no persona"),
        Entry("prompt", "prompt", 0, (), "raise", (), "a positive system instruction of the trait (the pair is the strength)"),
        Entry("fewshot", "fewshot", 0, (1.0, 2.0, 3.0), "raise", ("extraction",), "2, 4 or 6 question / positive answer shots"),
        Entry("vector", "vector", "auto", VECTOR_GRID, "raise", ("extraction", "layers"), "the persona vector at the measured best layer"),
        Entry("multilayer", "vector", "auto:K", VECTOR_GRID, "raise", ("extraction", "layers"), "the vector over the top K layers, weighted"),
        Entry("adapter", "adapter", 0, (0.5, 1.0, 1.5, 2.0), "raise", ("extraction", "adapter"), "a LoRA trained on the positive answers"),
        Entry(
            "llamacpp-vector", "llamacpp-vector", "auto", VECTOR_GRID, "raise", ("extraction", "layers"), "the vector as a llama.cpp control vector"
        ),
        Entry("cap", "cap", "auto", (0.5, 1.0), "lower", ("extraction", "layers"), "defence: activation capping at the best layer"),
    )
}
DEFAULT_METHODS = tuple(ENTRIES)


def strengths(entry: Entry, n_instruction_pairs: int) -> tuple[float, ...]:
    """The strengths `entry` is tuned over; the prompt baseline tries each of the trait's instruction pairs."""
    return entry.grid or tuple(float(k) for k in range(1, n_instruction_pairs + 1))
