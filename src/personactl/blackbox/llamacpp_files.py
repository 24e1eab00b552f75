"""The GGUF files a llama.cpp backend loads, each checked before llama.cpp sees it.

A model is an embedded model's alias or a .gguf path (`resolve_gguf`). A LoRA
is a llama.cpp LoRA GGUF for the model's architecture (`check_lora_gguf`, read
from the file's header only: llama.cpp ends the process on some bad adapter
files); a LoRA direction or persona adapter folder is converted once
(`gguf_lora.write_gguf_lora`) and cached by content (`lora_gguf`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError, PersonactlError
from ..models import EMBEDDED_MODELS, Backbone

if TYPE_CHECKING:
    from .llamacpp import LlamaCppBackend

GGUF_MAGIC = b"GGUF"


class LlamaCppError(PersonactlError):
    """A llama.cpp backend request that cannot run (model file, layer, LoRA file, context size)."""


def resolve_gguf(spec: str | Path) -> Path:
    """The .gguf file of an embedded model's alias or a .gguf path; anything else is a clear error."""
    text = str(spec)
    if text in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[text].locate()
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        _check_magic(path, "model")
        return path
    raise ModelLoadError(
        f"the llama.cpp backend loads GGUF models only: '{text}' is neither an alias "
        f"({', '.join(EMBEDDED_MODELS)}) nor a .gguf file (use --backend hf for HF folders and hub ids)"
    )


def _check_magic(path: Path, what: str) -> None:
    with open(path, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise LlamaCppError(f"{path} is not a GGUF file (no GGUF header): give a llama.cpp {what} file")


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_header(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The key-value pairs (arrays skipped) and tensor names of a GGUF file, read from its header only
    (gguf.GGUFReader maps every tensor: seconds on a model file)."""
    import struct  # noqa: PLC0415

    with open(path, "rb") as fh:

        def read(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            data = fh.read(size)
            if len(data) != size:
                raise LlamaCppError(f"{path} is a truncated GGUF file")
            return struct.unpack(fmt, data)[0]

        def string() -> str:
            return fh.read(read("<Q")).decode("utf-8", errors="replace")

        def value(kind: int) -> Any:
            if kind in _SCALARS:
                return read(_SCALARS[kind])
            if kind == 8:
                return string()
            if kind == 9:
                item, count = read("<I"), read("<Q")
                if item in _SCALARS:
                    fh.seek(count * struct.calcsize(_SCALARS[item]), 1)
                else:
                    for _ in range(count):
                        value(item)
                return None
            raise LlamaCppError(f"{path}: unknown GGUF value type {kind}")

        if fh.read(4) != GGUF_MAGIC:
            raise LlamaCppError(f"{path} is not a GGUF file (no GGUF header)")
        read("<I")
        n_tensors, n_kv = read("<Q"), read("<Q")
        fields = {}
        for _ in range(n_kv):
            key = string()
            fields[key] = value(read("<I"))
        names = []
        for _ in range(n_tensors):
            names.append(string())
            fh.seek(8 * read("<I") + 4 + 8, 1)  # dims, type, offset
    return fields, names


def check_lora_gguf(path: str | Path, architecture: str | None = None) -> Path:
    """Refuse anything but an existing llama.cpp LoRA GGUF (for `architecture`) before llama.cpp sees it:
    llama.cpp ends the process on some bad adapter files instead of returning an error."""
    path = Path(path).expanduser()
    if not path.exists():
        raise LlamaCppError(f"LoRA file not found: {path}")
    if not path.is_file():
        raise LlamaCppError(f"{path} is not a file: give a LoRA GGUF file, or a LoRA/adapter folder to convert")
    _check_magic(path, "LoRA")
    fields, names = gguf_header(path)
    if fields.get("general.type") != "adapter" or fields.get("adapter.type") != "lora":
        raise LlamaCppError(
            f"{path} is not a LoRA adapter GGUF (general.type={fields.get('general.type')!r}, "
            f"adapter.type={fields.get('adapter.type')!r})" + (" but a model file" if fields.get("general.type") == "model" else "")
        )
    arch = fields.get("general.architecture")
    if architecture and arch and arch != architecture:
        raise LlamaCppError(f"{path} is a LoRA for a '{arch}' model, this model is '{architecture}'")
    if not any(name.endswith(".lora_a") for name in names):
        raise LlamaCppError(f"{path} holds no lora_a/lora_b tensors")
    return path


# -- LoRA sources ----------------------------------------------------------------------------------------------


def lora_gguf(source: str | Path, backend: LlamaCppBackend, backbone: Backbone | None = None) -> Path:
    """A LoRA GGUF for `source`: a .gguf file as it is, or a LoRA direction / persona adapter (folder or registry
    name) converted once by `gguf_lora.write_gguf_lora` and cached by content. The conversion needs the HF
    model (tensor names, heads): `backbone`, else it is loaded from the backend's GGUF."""
    text = str(source)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf":
        return check_lora_gguf(path, backend.architecture)
    from ..lora.adapters import resolve_adapter  # noqa: PLC0415

    folder = Path(resolve_adapter(text))
    try:
        from . import gguf_lora  # noqa: PLC0415
    except ImportError as exc:
        raise LlamaCppError(
            f"converting the LoRA folder {folder} to GGUF needs personactl.blackbox.gguf_lora, which this install lacks: "
            "give a LoRA .gguf file instead"
        ) from exc
    if not folder.is_dir():
        raise LlamaCppError(f"LoRA not found: {source} is neither a LoRA .gguf file nor an adapter folder or registry name")
    target = _lora_cache(folder, backend)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        if backbone is None:
            from ..models import load_model  # noqa: PLC0415

            backbone = load_model(str(backend.path))
        gguf_lora.write_gguf_lora(folder, target, backbone)
    return check_lora_gguf(target, backend.architecture)


def _lora_cache(folder: Path, backend: LlamaCppBackend) -> Path:
    from ..model_folder import cache_root  # noqa: PLC0415

    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        file = folder / name
        if file.is_file():
            digest.update(name.encode() + file.read_bytes())
    digest.update(backend.architecture.encode())
    root = cache_root()
    if root is None:
        import tempfile  # noqa: PLC0415

        root = Path(tempfile.gettempdir()) / "personactl-models"
    return root / "gguf-lora" / f"{folder.name}-{digest.hexdigest()[:16]}.gguf"
