"""Safety-critical neurons (Wei et al. 2024, extended to LoRA): align a model to refuse, Wanda scores,
set-difference masks, prune check, fine-tuning with the masks frozen, score dynamics, report."""

from .align import HeldOut, align, measure_safety
from .data import chat_examples
from .dynamics import score_dynamics, verdict
from .errors import FrozenWeightsChanged, SafetyError
from .finetune import FULL_UTILITY, LORA_UTILITY, frozen_finetune
from .freeze import FrozenWeights, frozen, zeroed
from .identify import MASKS, RANDOM_MASKS, SUMMARY, IdentifySettings, identify, load_masks, load_scores, read_summary, require_summary
from .masks import load_tensors, mask_counts, match_to_model, random_like, save_tensors, set_difference, top_fraction
from .pipeline import DYNAMICS, RUN_MARKERS, Reference, measure_finetune, run_safety
from .prune import PRUNE_CHECK, prune_check
from .refusal import RefusalClassifier, is_refusal, rate_with_ci
from .report import format_change, format_rate, results_markdown, write_report
from .wanda import input_norms, linear_layers, scores_from_norms, wanda_scores

__all__ = [
    "DYNAMICS",
    "FULL_UTILITY",
    "LORA_UTILITY",
    "MASKS",
    "PRUNE_CHECK",
    "RANDOM_MASKS",
    "RUN_MARKERS",
    "SUMMARY",
    "FrozenWeights",
    "FrozenWeightsChanged",
    "HeldOut",
    "IdentifySettings",
    "Reference",
    "RefusalClassifier",
    "SafetyError",
    "align",
    "chat_examples",
    "format_change",
    "format_rate",
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
    "read_summary",
    "require_summary",
    "results_markdown",
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
