"""personactl: find, measure, steer and move the character traits of language models."""

from ._version import __version__ as __version__
from .activations import collect as collect_activations
from .activations import hidden_states
from .aggregators import METHODS
from .bench import BenchConfig, BenchReport, BenchResult, TraitBench, combined_score, paired_comparisons, run_bench, write_bench_report
from .blackbox.cvec import set_control_vector
from .blackbox.gguf_lora import GGUFLoRAError, write_gguf_lora
from .blackbox.gguf_merge import MergedGGUF, write_merged_gguf
from .capping import CapRangeError, cap_bounds, cap_term
from .capture import GenerationCapture
from .conditions import find_condition
from .errors import (
    ArchitectureError,
    BenchError,
    ConditionError,
    IncompatibleVectorError,
    LayerError,
    ModelLoadError,
    PersonactlError,
    SteeringError,
    TraitError,
    TransferError,
    VectorFileError,
)
from .evaluate import SweepConfig, run_sweep, summarize
from .experiment import run as run_experiment
from .expressibility import Expressibility
from .extraction import ContrastivePair, ExtractionSettings, extract, generate_pairs, load_pairs, save_pairs, vector_from_pairs
from .generation import chat_prompt, generate
from .intervals import auroc_ci, mean_ci, paired_difference_ci
from .judges.base import RELEVANCE_RUBRIC, Judges
from .judges.embedding import EmbeddingJudge
from .judges.factory import make_judges
from .judges.llm import OpenAIJudge
from .judges.local import LocalJudge
from .judges.relevance import EmbeddingRelevanceJudge
from .lora.adapters import PersonaSwitcher, train_adapter
from .lora.adherence import adherence
from .lora.config import LoRATrainConfig
from .lora.direction import LoRADirection, combine, difference, merged
from .lora.rank import lower_rank
from .lora.runtime import runtime
from .models import DEFAULT_MODEL, EMBEDDED_MODELS, Backbone, from_model, load_model
from .monitor import project, project_generated
from .portable import (
    ControlVectorError,
    PortableFormatError,
    export_vector,
    import_vector,
    read_control_vector,
    to_repeng,
    to_steering_vector,
    write_control_vector,
)
from .safety import (
    FrozenWeightsChanged,
    IdentifySettings,
    SafetyError,
    frozen,
    frozen_finetune,
    prune_check,
    run_safety,
    score_dynamics,
    set_difference,
    wanda_scores,
    zeroed,
)
from .safety import align as align_to_refuse
from .safety import identify as identify_safety_neurons
from .screening import Screening
from .screening import screen as screen_dataset
from .steering import Condition, SteeringTerm, steer
from .trait_generation import GeneratedTrait, TraitGenerationError, generate_trait
from .traits import ContrastiveTexts, Trait, builtin_traits, load_trait, parse_trait
from .transfer.config import TransferConfig
from .transfer.mapping import TransferMap, fit_map, map_vector
from .transfer.pairs import PairedActivations, collect_pairs
from .transfer.ridge import RidgeMap, fit_ridge
from .transfer.runner import run_transfer
from .vectors import PersonaVector, load_vector
from .verdicts import Verdict, sweep_verdicts, verdict_for

__all__ = [
    "BenchConfig",
    "BenchError",
    "BenchReport",
    "BenchResult",
    "TraitBench",
    "combined_score",
    "paired_comparisons",
    "run_bench",
    "write_bench_report",
    "GenerationCapture",
    "project_generated",
    "CapRangeError",
    "cap_bounds",
    "cap_term",
    "Expressibility",
    "Verdict",
    "auroc_ci",
    "mean_ci",
    "paired_difference_ci",
    "summarize",
    "sweep_verdicts",
    "verdict_for",
    "GeneratedTrait",
    "TraitGenerationError",
    "generate_trait",
    "Screening",
    "screen_dataset",
    "FrozenWeightsChanged",
    "IdentifySettings",
    "SafetyError",
    "align_to_refuse",
    "frozen",
    "frozen_finetune",
    "identify_safety_neurons",
    "prune_check",
    "run_safety",
    "score_dynamics",
    "set_difference",
    "wanda_scores",
    "zeroed",
    "ControlVectorError",
    "GGUFLoRAError",
    "read_control_vector",
    "set_control_vector",
    "write_control_vector",
    "PortableFormatError",
    "export_vector",
    "import_vector",
    "to_repeng",
    "to_steering_vector",
    "write_gguf_lora",
    "MergedGGUF",
    "write_merged_gguf",
    "lower_rank",
    "LoRATrainConfig",
    "PairedActivations",
    "RidgeMap",
    "TransferConfig",
    "TransferError",
    "TransferMap",
    "adherence",
    "collect_pairs",
    "fit_map",
    "fit_ridge",
    "map_vector",
    "run_transfer",
    "RELEVANCE_RUBRIC",
    "EmbeddingJudge",
    "EmbeddingRelevanceJudge",
    "Judges",
    "LoRADirection",
    "LocalJudge",
    "OpenAIJudge",
    "PersonaSwitcher",
    "SweepConfig",
    "combine",
    "difference",
    "load_vector",
    "make_judges",
    "merged",
    "run_experiment",
    "run_sweep",
    "runtime",
    "train_adapter",
    "ArchitectureError",
    "Condition",
    "ConditionError",
    "find_condition",
    "Backbone",
    "ContrastivePair",
    "ContrastiveTexts",
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "ExtractionSettings",
    "IncompatibleVectorError",
    "LayerError",
    "METHODS",
    "ModelLoadError",
    "PersonaVector",
    "PersonactlError",
    "SteeringError",
    "SteeringTerm",
    "Trait",
    "TraitError",
    "VectorFileError",
    "builtin_traits",
    "chat_prompt",
    "collect_activations",
    "extract",
    "from_model",
    "generate",
    "generate_pairs",
    "hidden_states",
    "load_model",
    "load_pairs",
    "load_trait",
    "parse_trait",
    "project",
    "save_pairs",
    "steer",
    "vector_from_pairs",
]
