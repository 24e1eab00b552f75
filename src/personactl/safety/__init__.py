"""Safety-critical neurons: Wanda scores, set-difference masks, frozen fine-tuning, score dynamics."""

from .errors import FrozenWeightsChanged, SafetyError
from .freeze import FrozenWeights, frozen, zeroed
from .masks import load_tensors, mask_counts, match_to_model, random_like, save_tensors, set_difference, top_fraction
from .wanda import input_norms, linear_layers, scores_from_norms, wanda_scores

__all__ = [
    "FrozenWeights", "FrozenWeightsChanged", "SafetyError", "frozen", "input_norms", "linear_layers", "load_tensors", "mask_counts",
    "match_to_model", "random_like", "save_tensors", "scores_from_norms", "set_difference", "top_fraction", "wanda_scores", "zeroed",
]
