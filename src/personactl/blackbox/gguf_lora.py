"""A LoRA persona direction or persona adapter as a llama.cpp LoRA adapter (GGUF).

llama.cpp's layout (convert_lora_to_gguf.py, src/llama-adapter.cpp):
`general.type = "adapter"`, `adapter.type = "lora"`, `adapter.lora.alpha`,
`general.architecture` of the base, and per adapted weight two tensors named
after the base tensor: `blk.N.attn_q.weight.lora_a` (A, numpy [r, in], GGUF
ne [in, r]) and `.lora_b` (B, numpy [out, r]). llama.cpp computes
y += scale * alpha / r * B @ A @ x, with `scale` the user's `--lora-scaled`
factor (1 for `--lora`). Where llama.cpp's converter rearranges the rows of a
base weight (q/k rows for rotary in llama and the models derived from it, the
fused qkv of GPT-NeoX), B gets the same rows, as convert_lora_to_gguf does; q/k
of an architecture whose conversion personactl does not know are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_path
from ..errors import PersonactlError
from ..lora.direction import AdapterError, LoRADirection
from ..models import Backbone
from ..portable.llamacpp import ControlVectorError, llama_cpp_arch

# How llama.cpp's converter writes the rows of q/k weights, by the transformers architecture it dispatches on
# (config.architectures[0]). Read from convert_hf_to_gguf.py's conversion/ package at llama.cpp commit
# 0c1e57098bba43ac29e6e3b677cdceebdd22334f (the one llama-cpp-python 0.3.36 builds).
# LlamaModel.modify_tensors permutes q/k rows (LlamaModel.permute) for the architectures registered on LlamaModel and
# on its subclasses that keep undo_permute = True and pass attention weights to it (Arcee, CogVLM, Granite and its MoE
# and SWA variants, JanusPro, LlamaEmbedNemotron, Nanbeige, Sarashina2VL, SmolLM3); OlmoModel repeats that permutation.
ROTARY_QK = frozenset(
    {
        "LLaMAForCausalLM",
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "MixtralForCausalLM",
        "VLlama3ForCausalLM",
        "LlavaForConditionalGeneration",
        "VoxtralForConditionalGeneration",
        "LlamaForCausalLMEagle3",
        "Eagle3LlamaForCausalLM",
        "Eagle3Speculator",
        "Eagle3DraftModel",
        "IQuestCoderForCausalLM",
        "LlamaModel",
        "ArceeForCausalLM",
        "CogVLMForCausalLM",
        "GraniteForCausalLM",
        "GraniteMoeForCausalLM",
        "GraniteMoeSharedForCausalLM",
        "GraniteSWAForCausalLM",
        "GraniteMoeSWAForCausalLM",
        "JanusForConditionalGeneration",
        "LlamaBidirectionalModel",
        "NanbeigeForCausalLM",
        "Sarashina2VisionForCausalLM",
        "SmolLM3ForCausalLM",
        "OlmoForCausalLM",
        "OLMoForCausalLM",
    }
)
# GPTNeoXModel regroups query_key_value's rows from per-head [q k v] blocks to all q, then all k, then all v.
QKV_BY_HEAD = frozenset({"GPTNeoXForCausalLM"})
# Converters that write q/k (or fused qkv) rows as they are: Qwen2Model, Qwen3Model, GemmaModel, Gemma2Model,
# Gemma3Model, Phi3MiniModel, GPT2Model (which only transposes Conv1D weights to [out, in], as LoRADirection holds them),
# and the LlamaModel subclasses that set undo_permute = False (Llama4Model, ApertusModel).
ROWS_AS_IS = frozenset(
    {
        "Qwen2ForCausalLM",
        "Qwen2Model",
        "Qwen3ForCausalLM",
        "Qwen3Model",
        "GemmaForCausalLM",
        "Gemma2ForCausalLM",
        "Gemma3ForCausalLM",
        "Gemma3ForConditionalGeneration",
        "Phi3ForCausalLM",
        "GPT2LMHeadModel",
        "Llama4ForCausalLM",
        "Llama4ForConditionalGeneration",
        "ApertusForCausalLM",
    }
)
QK_TENSORS = ("attn_q.weight", "attn_k.weight", "attn_qkv.weight")


class GGUFLoRAError(PersonactlError):
    """A LoRA folder that cannot be written as a llama.cpp LoRA adapter for this model."""


def load_lora_folder(folder: str | Path) -> LoRADirection:
    """A `lora extract` direction folder (OUT or OUT/diff), a persona adapter folder or a registry adapter name."""
    folder = Path(folder)
    if not folder.is_dir() and folder.name == str(folder):  # a plain name: an adapter in the registry
        from ..lora.adapters import resolve_adapter  # noqa: PLC0415

        try:
            folder = resolve_adapter(str(folder))
        except AdapterError:
            pass
    if not folder.is_dir():
        raise GGUFLoRAError(
            f"{folder} is not a folder (nor a registry adapter): give a LoRA direction (lora extract OUT/diff) or a persona adapter folder"
        )
    if not (folder / "adapter_config.json").is_file() and (folder / "diff" / "adapter_config.json").is_file():
        folder = folder / "diff"
    try:
        return LoRADirection.load(folder)
    except AdapterError as exc:
        raise GGUFLoRAError(f"{exc}; give a LoRA direction (lora extract OUT/diff) or a persona adapter folder") from exc


def permute_rows(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """convert_hf_to_gguf's LlamaModel.permute on the rows of `weight` ([out, ...], out = n_head * head_dim)."""
    shape = weight.shape
    return weight.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def regroup_qkv_rows(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """convert_hf_to_gguf's GPT-NeoX query_key_value reordering on the rows of `weight` ([3 * hidden, ...])."""
    by_head = weight.reshape(n_head, 3, weight.shape[0] // n_head // 3, *weight.shape[1:])
    return torch.cat([by_head[:, part].reshape(-1, *weight.shape[1:]) for part in range(3)])


def converter_architecture(backbone: Backbone) -> str:
    """The architecture llama.cpp's converter dispatches on: config.architectures[0], else the model's class name."""
    return (getattr(backbone.model.config, "architectures", None) or [type(backbone.model).__name__])[0]


def converted_rows(b: torch.Tensor, target: str, architecture: str, n_head: int, n_kv: int) -> torch.Tensor:
    """B with its rows in the order llama.cpp's converter writes the rows of the base weight `target`."""
    if not target.endswith(QK_TENSORS) or architecture in ROWS_AS_IS:
        return b
    if architecture in ROTARY_QK and not target.endswith("attn_qkv.weight"):
        return permute_rows(b, n_head if target.endswith("attn_q.weight") else n_kv)
    if architecture in QKV_BY_HEAD and target.endswith("attn_qkv.weight"):
        return regroup_qkv_rows(b, n_head)
    known = sorted(ROTARY_QK | QKV_BY_HEAD | ROWS_AS_IS)
    raise GGUFLoRAError(
        f"cannot vouch for {target} of {architecture}: how llama.cpp's converter orders its q/k rows is known for "
        f"{', '.join(known)}; export an adapter without q/k (e.g. v_proj, o_proj, MLP targets)"
    )


def _tensor_name(name_map: Any, module: str) -> str:
    found = name_map.get_name(f"{module}.weight", try_suffixes=(".weight",))
    if found is None:
        raise GGUFLoRAError(f"module '{module}' has no llama.cpp tensor (only decoder-block weights can be exported)")
    return found


def gguf_lora_tensors(direction: LoRADirection, backbone: Backbone) -> tuple[str, float, dict[str, np.ndarray]]:
    """(architecture, alpha, {llama.cpp tensor name: array}) for `direction` on `backbone`."""
    import gguf  # noqa: PLC0415

    try:
        direction.check_base(backbone)
        arch = llama_cpp_arch(backbone.model_type)
    except (AdapterError, ControlVectorError) as exc:
        raise GGUFLoRAError(str(exc)) from exc
    model_arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    name_map = gguf.TensorNameMap(model_arch, backbone.n_layers)
    config = backbone.model.config
    architecture = converter_architecture(backbone)
    n_head = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_head)
    # One alpha for the file: keep B as it is when every module shares scaling and rank, else fold scaling into B.
    uniform = len({(f.scaling, f.rank) for f in direction.modules.values()}) == 1
    first = next(iter(direction.modules.values()))
    alpha = first.scaling * first.rank if uniform else 0.0  # alpha 0: llama.cpp applies the factors as they are
    tensors: dict[str, np.ndarray] = {}
    for module, factors in direction.modules.items():
        target = _tensor_name(name_map, module)
        b = converted_rows(factors.B.float() if uniform else factors.B.float() * factors.scaling, target, architecture, n_head, n_kv)
        tensors[f"{target}.lora_a"] = factors.A.float().contiguous().numpy()
        tensors[f"{target}.lora_b"] = b.contiguous().numpy()
    return arch, alpha, tensors


def write_gguf_lora(source: LoRADirection | str | Path, path: str | Path, backbone: Backbone) -> Path:
    """Write a LoRA direction / adapter (object or folder) as a llama.cpp LoRA GGUF for `backbone`'s base.

    F32 factors, written atomically; `llama-cli -m BASE.gguf --lora PATH` (or
    `--lora-scaled PATH s`) applies s * dW with dW exactly the PEFT delta.
    """
    import gguf  # noqa: PLC0415

    direction = source if isinstance(source, LoRADirection) else load_lora_folder(source)
    arch, alpha, tensors = gguf_lora_tensors(direction, backbone)
    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        writer.add_string("personactl.base_model", backbone.name)
        writer.add_string("personactl.metadata", json.dumps(direction.metadata, default=str)[:65000])
        for name, array in tensors.items():
            writer.add_tensor(name, array.astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path
