"""Cross-model persona transfer: map a direction from a source model's activation
space (hidden size d_s) to a target model's (hidden size d_t).

`ridge` fits a linear map on paired activations (exact leave-one-out or k-fold
choice of the penalty); `baselines` holds the maps that need no pairs (pad,
interpolate, random orthogonal) and orthogonal Procrustes, to compare against.
"""

from .config import TransferConfig, load_config
from .evaluation import evaluate_vector, verdict_of
from .mapping import TransferMap, fit_map, map_vector
from .pairs import PairedActivations, builtin_texts, collect_pairs, layer_pair, read_texts
from .ridge import RidgeMap, fit_ridge
from .runner import run_transfer

__all__ = [
    "PairedActivations",
    "RidgeMap",
    "TransferConfig",
    "TransferMap",
    "builtin_texts",
    "collect_pairs",
    "evaluate_vector",
    "fit_map",
    "fit_ridge",
    "layer_pair",
    "load_config",
    "map_vector",
    "read_texts",
    "run_transfer",
    "verdict_of",
]
