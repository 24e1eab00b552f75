"""Weight-space personas: LoRA training, persona directions (pos - neg), merge/restore, SVD."""

from .adapters import (
    PersonaSwitcher,
    adapter_defaults,
    adapter_target,
    blend_adapters,
    list_adapters,
    merge_adapter,
    read_card,
    read_persona_data,
    read_persona_records,
    registry_dir,
    resolve_adapter,
    train_adapter,
)
from .adherence import adherence
from .analysis import plot_svd, svd_table
from .chat import CHAT_HELP, ChatSession, default_layer
from .compare import compare
from .config import LoRATrainConfig
from .direction import PERSONA, LoRADirection, combine, difference, merged
from .finetune import finetune
from .persona import extract_lora_direction
from .projection import drift_report
from .rank import energy_line, lower_rank
from .runtime import runtime
from .train import check_out_dir

__all__ = [
    "CHAT_HELP",
    "PERSONA",
    "ChatSession",
    "LoRADirection",
    "LoRATrainConfig",
    "PersonaSwitcher",
    "adapter_defaults",
    "adapter_target",
    "adherence",
    "blend_adapters",
    "check_out_dir",
    "combine",
    "compare",
    "default_layer",
    "difference",
    "drift_report",
    "energy_line",
    "extract_lora_direction",
    "finetune",
    "list_adapters",
    "lower_rank",
    "merge_adapter",
    "merged",
    "plot_svd",
    "read_card",
    "read_persona_data",
    "read_persona_records",
    "registry_dir",
    "resolve_adapter",
    "runtime",
    "svd_table",
    "train_adapter",
]
