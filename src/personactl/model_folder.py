"""Plain Hugging Face model folders: saving a loaded model as one, and the converted-GGUF cache.

transformers reads a .gguf file by parsing its metadata (three times: config,
tokenizer, weights) and de-quantizing every tensor, which takes tens of seconds
to minutes on a CPU (Gemma3-270M's 262k-token vocabulary dominates). The result
is an ordinary float model, so personactl saves it once as a model folder and
loads that folder afterwards, exactly the same weights and tokenizer, in a few
seconds. The cache lives in $PERSONACTL_MODEL_CACHE (default
~/.cache/personactl/models; "off" disables it) and is keyed by the file's path,
size and modification time and the transformers version.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from ._io import replace_folder
from .errors import ModelLoadError, OutputError

CACHE_ENV = "PERSONACTL_MODEL_CACHE"
COMPLETE = "personactl-cache-complete"


def save_model_folder(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save weights, config and tokenizer as a folder plain `from_pretrained` loads (GGUF-loaded models too)."""
    out = Path(out_dir)
    with _without_gguf_marks(model):
        model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@contextmanager
def _without_gguf_marks(model: Any) -> Iterator[None]:
    """Hide the GGUF quantizer that refuses save_pretrained, when the weights are already plain floats.

    A model loaded from a .gguf file keeps transformers' GGUF quantizer and its config entry even
    though every weight was de-quantized; saved as they are, the folder would not load. Weights still
    packed in GGUF blocks (a GGUF kernel was used) cannot be saved as floats: that is refused.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if quantizer is None or getattr(method, "value", method) != "gguf":
        yield
        return
    if getattr(quantizer, "packed_modules", None):
        raise ModelLoadError("this GGUF model keeps its weights packed (a GGUF kernel is in use): load it without the kernel to save it")
    config = model.config
    had_entry = hasattr(config, "quantization_config")
    entry = getattr(config, "quantization_config", None)
    model.hf_quantizer = None
    if had_entry:
        del config.quantization_config
    try:
        yield
    finally:
        model.hf_quantizer = quantizer
        if had_entry:
            config.quantization_config = entry


def cache_root() -> Path | None:
    """Folder of converted models, or None when $PERSONACTL_MODEL_CACHE is "off"."""
    value = os.environ.get(CACHE_ENV, "")
    if value.lower() in {"off", "0", "false", "no"}:
        return None
    if value:
        return Path(value).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    return base / "personactl" / "models"


def cached_folder(gguf: Path) -> Path | None:
    """Where the converted copy of `gguf` lives in the cache (whether or not it exists yet); None if caching is off."""
    root = cache_root()
    if root is None:
        return None
    stat = gguf.resolve().stat()
    key = f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{metadata.version('transformers')}"
    return root / f"{gguf.stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def is_complete(folder: Path | None) -> bool:
    """True when `folder` holds a finished cache entry (a crash mid-write leaves none)."""
    return folder is not None and (folder / COMPLETE).is_file()


def write_cache(model: Any, tokenizer: Any, folder: Path) -> bool:
    """Save a converted model into the cache, atomically; False (and no entry) when the disk refuses it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_model_folder(model, tokenizer, tmp)
        (tmp / COMPLETE).write_text(f"{tmp.name}\n", encoding="utf-8")
        if not is_complete(folder):  # else another process finished first
            # over an unfinished entry an earlier crash may have left (a model folder: config.json)
            replace_folder(tmp, folder, owned=(COMPLETE, "config.json"))
        return True
    except (OSError, ModelLoadError, OutputError):
        return False
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
