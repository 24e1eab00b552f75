"""Loading the embedded models: converting the .gguf file every time vs reading the converted-model cache.

Run: .venv/bin/python benchmarks/model_load.py
Per model, in one process, with a fresh cache folder: a load with the cache switched off (what every
load cost before the cache), the one-off cost of writing the cache entry, and a load from the cache.
The cached model's logits on a prompt are compared with the GGUF-loaded model's.
"""

from __future__ import annotations

import os
import tempfile
import time
from functools import partial

import torch
from _table import write_section

from personactl import load_model
from personactl.model_folder import CACHE_ENV, cached_folder, write_cache
from personactl.models import EMBEDDED_MODELS

PROMPT = "Tell me about the sea."


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def logits(backbone) -> torch.Tensor:
    with torch.no_grad():
        return backbone.model(**backbone.tokenizer(PROMPT, return_tensors="pt")).logits


def main() -> None:
    rows = []
    for alias in ("smollm2-135m", "gemma3-270m"):
        os.environ[CACHE_ENV] = "off"
        gguf_seconds, converted = timed(partial(load_model, alias))
        os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="personactl-bench-")
        folder = cached_folder(EMBEDDED_MODELS[alias].locate())
        write_seconds, _ = timed(partial(write_cache, converted.model, converted.tokenizer, folder))
        cached_seconds, cached = timed(partial(load_model, alias))
        assert cached.model.name_or_path == str(folder)
        same = torch.equal(logits(cached), logits(converted))
        size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
        rows.append(
            {
                "model": alias,
                "GGUF load (s)": gguf_seconds,
                "writing the cache (s)": write_seconds,
                "cached load (s)": cached_seconds,
                "speed-up": gguf_seconds / cached_seconds,
                "cache size (MiB)": f"{size:.0f}",
                "identical logits": "yes" if same else "NO",
            }
        )
        print(rows[-1])
    note = (
        "One load each, in one process (import time excluded). The GGUF load parses the file's metadata three "
        "times (config, tokenizer, weights) and de-quantizes every tensor; the cache is the same float32 model "
        "saved once as a plain folder ($PERSONACTL_MODEL_CACHE, 'off' to disable)."
    )
    print(write_section("model_load", "Model load: GGUF conversion vs the converted-model cache", rows, note))


if __name__ == "__main__":
    main()
