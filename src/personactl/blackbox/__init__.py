"""Black-box steering: personas for models whose internals personactl does not run.

`cvec` hands a control vector to a running llama.cpp (the file format is
`personactl.portable`), `gguf_lora` writes LoRA persona directions and
adapters as llama.cpp LoRA GGUF files, `gguf_merge` folds one into a GGUF model. The
llama.cpp backend: `llamacpp` (the model and generation), `llamacpp_files`
(the GGUF files it loads, checked first), `llamacpp_controls` (a persona
vector as a control vector), `llamacpp_methods` (its sweep methods),
`llamacpp_chat` (the terminal chat) and `llamacpp_server` (llama.cpp's
OpenAI-compatible server). Through an OpenAI-compatible endpoint: `api`,
`modulation` (sampling parameters from a vector) and `fewshot`. Nothing here
imports llama_cpp at import time; it is an optional extra.
"""

from .api import ApiGenerator, Sampling
from .cvec import set_control_vector
from .fewshot import FewShotMethod, fewshot_messages, shots
from .gguf_lora import GGUFLoRAError, load_lora_folder, permute_rows, write_gguf_lora
from .gguf_merge import WEIGHT_TYPES, MergedGGUF, write_merged_gguf
from .llamacpp import LlamaCppBackend, context_size, generate_answers
from .llamacpp_chat import CHAT_HELP, LlamaCppChat
from .llamacpp_controls import Control, control_buffer
from .llamacpp_files import LlamaCppError, check_lora_gguf, lora_gguf, resolve_gguf
from .llamacpp_methods import LlamaCppAdapterMethod, LlamaCppLoRAMethod, LlamaCppPromptMethod, LlamaCppVectorMethod
from .llamacpp_server import ServerStartError, llamacpp_server
from .modulation import MAGNITUDE_UNIT, ApiPromptMethod, ModulationError, ModulationMethod, generate_modulated, hidden_norms, magnitude, modulated

__all__ = [
    "CHAT_HELP",
    "MAGNITUDE_UNIT",
    "WEIGHT_TYPES",
    "ApiGenerator",
    "ApiPromptMethod",
    "Control",
    "FewShotMethod",
    "GGUFLoRAError",
    "LlamaCppAdapterMethod",
    "LlamaCppBackend",
    "LlamaCppChat",
    "LlamaCppError",
    "LlamaCppLoRAMethod",
    "LlamaCppPromptMethod",
    "LlamaCppVectorMethod",
    "MergedGGUF",
    "ModulationError",
    "ModulationMethod",
    "Sampling",
    "ServerStartError",
    "check_lora_gguf",
    "context_size",
    "control_buffer",
    "fewshot_messages",
    "generate_answers",
    "generate_modulated",
    "hidden_norms",
    "llamacpp_server",
    "load_lora_folder",
    "lora_gguf",
    "magnitude",
    "modulated",
    "permute_rows",
    "resolve_gguf",
    "set_control_vector",
    "shots",
    "write_gguf_lora",
    "write_merged_gguf",
]
