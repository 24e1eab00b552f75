"""Safety-critical neurons (Wei et al. 2024, extended to LoRA): align a model to refuse, Wanda scores,
set-difference masks, prune check, fine-tuning with the masks frozen, score dynamics, report."""

from .align import align, measure_safety
from .dynamics import score_dynamics, verdict
from .errors import FrozenWeightsChanged, SafetyError
from .finetune import frozen_finetune
from .freeze import FrozenWeights, frozen, zeroed
from .identify import IdentifySettings, identify, load_masks, load_scores
from .masks import load_tensors, mask_counts, match_to_model, random_like, save_tensors, set_difference, top_fraction
from .pipeline import measure_finetune, run_safety
from .prune import prune_check
from .refusal import RefusalClassifier, is_refusal, rate_with_ci
from .report import write_report
from .wanda import input_norms, linear_layers, scores_from_norms, wanda_scores

__all__ = [
    "FrozenWeights",
    "FrozenWeightsChanged",
    "IdentifySettings",
    "RefusalClassifier",
    "SafetyError",
    "align",
    "frozen",
    "frozen_finetune",
    "identify",
    "input_norms",
    "is_refusal",
    "linear_layers",
    "load_masks",
    "load_scores",
    "load_tensors",
    "mask_counts",
    "match_to_model",
    "measure_finetune",
    "measure_safety",
    "prune_check",
    "random_like",
    "rate_with_ci",
    "run_safety",
    "save_tensors",
    "score_dynamics",
    "scores_from_norms",
    "set_difference",
    "top_fraction",
    "verdict",
    "wanda_scores",
    "write_report",
    "zeroed",
]
