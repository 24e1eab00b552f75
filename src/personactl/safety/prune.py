"""Step 2: does zeroing the set-difference weights remove refusals while utility holds? Against a random mask and safety-only."""

from __future__ import annotations

import json
from pathlib import Path

from .._io import write_text_atomic
from ..models import Backbone
from ..progress import note
from .align import HeldOut
from .freeze import zeroed
from .identify import MASKS, RANDOM_MASKS, SAFETY_SCORES, load_masks, load_scores, require_summary
from .masks import Tensors, mask_counts, top_fraction
from .measure import refusals, utility_perplexity

PRUNE_CHECK = "prune_check.json"


def _measure(backbone: Backbone, held_out: HeldOut, masks: Tensors | None) -> dict:
    def run() -> dict:
        harmful = refusals(backbone, held_out.harmful, held_out.classifier)
        return {"refusal": harmful.to_dict(), "utility_perplexity": utility_perplexity(backbone, held_out.benign)}

    if masks is None:
        return {"pruned": 0, **run()}
    with zeroed(backbone, masks) as count:
        return {"pruned": count, **run()}


def prune_check(backbone: Backbone, identify_dir: str | Path, held_out: HeldOut | None = None) -> dict:
    """Refusal on held-out harmful requests and utility perplexity with no pruning, the set-difference mask,
    a random mask of the same size per matrix, and the top safety weights without the set difference.

    The model's weights are restored bit-exactly after each; the result goes to prune_check.json in the folder.
    """
    folder = Path(identify_dir)
    summary = require_summary(folder)
    held_out = held_out or HeldOut.for_model(backbone)
    masks = load_masks(backbone, folder / MASKS)
    variants: dict[str, Tensors | None] = {
        "none": None,
        "set_difference": masks,
        "random": load_masks(backbone, folder / RANDOM_MASKS),
        "safety_only": top_fraction(load_scores(backbone, folder / SAFETY_SCORES), summary["settings"]["sparsity"]),
    }
    result: dict = {"model": backbone.name, "settings": summary["settings"], "variants": {}}
    for name, variant in variants.items():
        note(f"prune check: {name.replace('_', ' ')} ({mask_counts(variant)['masked'] if variant else 0} weights zeroed)")
        result["variants"][name] = _measure(backbone, held_out, variant)
    write_text_atomic(folder / PRUNE_CHECK, json.dumps(result, indent=2))
    return result
