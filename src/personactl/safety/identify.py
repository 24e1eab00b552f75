"""Step 1: Wanda scores on safety and utility calibration data, and the set-difference mask (Wei et al. 2024)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .._io import check_replaceable, write_text_atomic
from ..models import Backbone
from .data import chat_examples
from .errors import SafetyError
from .masks import Tensors, check_fraction, load_tensors, mask_counts, match_to_model, random_like, save_tensors, set_difference, top_fraction
from .wanda import wanda_scores

SAFETY_SCORES, UTILITY_SCORES, MASKS, RANDOM_MASKS = (
    "safety_scores.safetensors",
    "utility_scores.safetensors",
    "masks.safetensors",
    "random_masks.safetensors",
)
REFERENCE_SCORES, REFERENCE_MASKS = "original_safety_scores.pt", "original_safety_masks.pt"
SUMMARY = "identify.json"


@dataclass(frozen=True)
class IdentifySettings:
    """What the masks depend on; a folder identified with other settings is recomputed, not reused."""

    model: str
    sparsity: float = 0.03
    utility_sparsity: float = 0.03
    nsamples: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        check_fraction(self.sparsity)
        check_fraction(self.utility_sparsity, "utility sparsity")
        if self.nsamples < 1:
            raise SafetyError(f"nsamples must be at least 1, got {self.nsamples}")


def calibration(backbone: Backbone, split: str, nsamples: int) -> tuple[list[str], list[str]]:
    """The first `nsamples` examples of a training split: chat prompts and the answers whose tokens are scored."""
    examples = chat_examples(backbone, split).head(nsamples)
    return examples.prompts, examples.answers


def safety_calibration_scores(backbone: Backbone, nsamples: int) -> Tensors:
    """Wanda scores on harmful requests + refusals (the answer tokens), as identify computes them."""
    return wanda_scores(backbone, *calibration(backbone, "harmful_train", nsamples), what="safety data")


def identify(backbone: Backbone, out_dir: str | Path, settings: IdentifySettings, *, reference_pt: bool = False) -> dict:
    """Score every block linear layer on safety and utility data, write scores and masks, return the summary.

    A folder that already holds a summary with the same settings is reused as it is (resumable).
    """
    out = check_replaceable(out_dir, SUMMARY)
    done = read_summary(out)
    if (
        done is not None
        and done["settings"] == asdict(settings)
        and all((out / f).is_file() for f in (SAFETY_SCORES, UTILITY_SCORES, MASKS, RANDOM_MASKS))
    ):
        return done
    safety = safety_calibration_scores(backbone, settings.nsamples)
    utility = wanda_scores(backbone, *calibration(backbone, "benign_train", settings.nsamples), what="utility data")
    masks = set_difference(safety, utility, settings.sparsity, settings.utility_sparsity)
    meta = {"model": backbone.name, **asdict(settings)}
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(safety, out / SAFETY_SCORES, {**meta, "data": "harmful_train"})
    save_tensors(utility, out / UTILITY_SCORES, {**meta, "data": "benign_train"})
    save_tensors(masks, out / MASKS, {**meta, "kind": "set difference"})
    save_tensors(random_like(masks, settings.seed), out / RANDOM_MASKS, {**meta, "kind": "random, same count per matrix"})
    if reference_pt:
        save_tensors(safety, out / REFERENCE_SCORES)
        save_tensors(masks, out / REFERENCE_MASKS)
    counts = mask_counts(masks)
    summary = {
        "settings": asdict(settings),
        "model": backbone.name,
        **counts,
        "fraction": counts["masked"] / counts["total"],
        "per_matrix": {name: int(m.sum()) for name, m in masks.items()},
        "safety_only": mask_counts(top_fraction(safety, settings.sparsity))["masked"],
    }
    write_text_atomic(out / SUMMARY, json.dumps(summary, indent=2))
    return summary


def read_summary(folder: str | Path) -> dict | None:
    path = Path(folder) / SUMMARY
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def require_summary(folder: str | Path) -> dict:
    """The summary of an identify folder; an error saying what to run when there is none."""
    summary = read_summary(folder)
    if summary is None:
        raise SafetyError(f"{folder} holds no {SUMMARY}: run `personactl safety identify --out {folder}` first")
    return summary


def load_masks(backbone: Backbone, path: str | Path) -> Tensors:
    """Masks from an identify folder (its masks.safetensors) or a mask file (.safetensors or the reference's .pt), checked against the model."""
    path = Path(path)
    masks, _ = load_tensors(path / MASKS if path.is_dir() else path)
    if any(m.dtype != torch.bool for m in masks.values()):
        raise SafetyError(f"{path} holds scores, not boolean masks: give masks.safetensors or original_safety_masks.pt")
    return match_to_model(backbone, masks)


def load_scores(backbone: Backbone, path: str | Path) -> Tensors:
    """Scores from a file, checked against the model."""
    scores, _ = load_tensors(path)
    return match_to_model(backbone, scores, "score file")
