"""Which engine generates: `hf` (transformers, hooks), `llamacpp` (a GGUF model under llama.cpp) or `openai:MODEL`.

Only names live here (a sweep's configuration speaks them); the engines themselves are in `personactl.blackbox`.

A sweep on another backend is a sweep of that backend's methods: `--backend
llamacpp` turns `vector` into `llamacpp-vector`, `lora` into `llamacpp-lora`
(and `adapter`, `prompt` alike). The method name goes into every record, so
results of both backends sit side by side in one results.jsonl, summary and
report (`--methods vector,llamacpp-vector` compares them in one run), while
perplexity and the judges still come from the HF model the sweep loads.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import OptionError, PersonactlError

BACKENDS = ("hf", "llamacpp")  # local engines; a sweep also takes openai:MODEL for its API methods (blackbox.api)
LLAMACPP_METHODS = {m: f"llamacpp-{m}" for m in ("vector", "lora", "adapter", "prompt")}


def check_backend(name: str) -> str:
    """`name` if it is a backend, else a one-line error."""
    if name not in BACKENDS:
        raise OptionError(f"--backend {name!r} is not one of: {', '.join(BACKENDS)}")
    return name


def backend_methods(methods: Sequence[str], backend: str) -> list[str]:
    """The sweep methods that run `methods` on `backend`.

    On `llamacpp`, vector, lora, adapter and prompt become their llamacpp-* twins; every other
    method (already llamacpp-*, or one that reads the backend itself, such as modulation) passes through.
    """
    if backend != "llamacpp":
        return list(methods)
    return [LLAMACPP_METHODS.get(method, method) for method in methods]


class BackendError(PersonactlError):
    """An unknown backend, or an endpoint that cannot generate as asked."""


def parse_backend(spec: str) -> tuple[str, str]:
    """'hf' -> ('hf', ''), 'llamacpp' -> ('llamacpp', ''), 'openai:MODEL' -> ('openai', MODEL); anything else raises."""
    text = (spec or "").strip()
    if text in ("hf", "llamacpp"):
        return text, ""
    kind, sep, model = text.partition(":")
    if kind == "openai" and sep and model.strip():
        return "openai", model.strip()
    raise BackendError(
        f"unknown backend {spec!r}: use 'hf' (the local Hugging Face model, default), 'llamacpp' (llama-cpp-python in "
        "process) or 'openai:MODEL' (an OpenAI-compatible endpoint; base URL and key from PERSONACTL_API_BASE_URL / "
        "PERSONACTL_API_KEY or OPENAI_BASE_URL / OPENAI_API_KEY)"
    )
