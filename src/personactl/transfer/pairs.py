"""Paired activations: the same texts through two models, each with its own tokenizer.

A pair is the source and the target model's hidden state after the same
prefix of a text. Prefixes end at word boundaries where both tokenizers also
end a token, so both models have read exactly the same characters; one forward
pass per text and model gives every prefix at once (causal attention), so a
few hundred texts give thousands of pairs.

Reductions: `last` (the state at the prefix's last token, as steering during
generation sees it) or `mean` (the mean over the prefix's tokens).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._io import atomic_path
from ..activations import layer_states, left_pad
from ..errors import TransferError
from ..models import Backbone
from ..progress import progress_bar

REDUCTIONS = ("last", "mean")
MIN_CONTEXT_TOKENS = 3  # the first tokens carry attention-sink states far from the rest; skip them


def corresponding_layer(source_layer: int, source_layers: int, target_layers: int, mode: str = "relative") -> int:
    """The target layer matching `source_layer`: the same index, or the same relative depth."""
    if mode == "same":
        if source_layer > target_layers:
            raise TransferError(f"source layer {source_layer} does not exist in a target with {target_layers} layers: use relative depth")
        return source_layer
    if mode != "relative":
        raise TransferError(f"unknown layer correspondence '{mode}': use 'same' or 'relative'")
    return max(1, min(target_layers, round(source_layer * target_layers / source_layers)))


def builtin_texts() -> list[str]:
    """The offline transfer corpus: every text that ships with personactl (persona answers and
    instructions, neutral answers, trait extraction questions), deduplicated, in a fixed order."""
    root = resources.files("personactl") / "data"
    texts: list[str] = []
    for jsonl in sorted([*(root / "personas").iterdir(), root / "neutral_qa.jsonl"], key=lambda p: p.name):
        for line in jsonl.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                texts += [record["instruction"], record["output"]]
    for trait_file in sorted((root / "traits").iterdir(), key=lambda p: p.name):
        trait = json.loads(trait_file.read_text(encoding="utf-8"))
        texts += trait.get("questions", [])  # never the held-out eval questions: they test the transfer
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


def read_texts(path: str | Path) -> list[str]:
    """Texts from a file: one per line (.txt), or JSONL with a "text" (or "output") field per line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TransferError(f"cannot read texts from {path}: {exc.strerror}") from exc
    if path.suffix != ".jsonl":
        return [line.strip() for line in lines if line.strip()]
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            texts.append(record.get("text") or record["output"])
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError) as exc:
            raise TransferError(f"{path} line {number}: expected a JSON object with a 'text' field") from exc
    return texts


def layer_pair(
    source: Backbone, target: Backbone, source_layer: int | None = None, target_layer: int | None = None, mode: str = "relative"
) -> tuple[int, int]:
    """(source layer, target layer), checked: the given ones, else 5/6 of the source's depth and its corresponding target layer."""
    s = source_layer or round(source.n_layers * 5 / 6)
    t = target_layer or corresponding_layer(s, source.n_layers, target.n_layers, mode)
    return source.check_layer(s, allow_embedding=False), target.check_layer(t, allow_embedding=False)


def token_ends(backbone: Backbone, text: str) -> tuple[list[int], dict[int, int]]:
    """Token ids of `text` (with the model's own special tokens) and {character end: token index}."""
    if not getattr(backbone.tokenizer, "is_fast", False):
        raise TransferError(f"{backbone.name}'s tokenizer has no character offsets (not a fast tokenizer): paired activations need one")
    encoded = backbone.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    ends = {end: i for i, (start, end) in enumerate(encoded["offset_mapping"]) if end > start}
    return encoded["input_ids"], ends


def shared_word_ends(text: str, source_ends: dict[int, int], target_ends: dict[int, int]) -> list[tuple[int, int]]:
    """(source token, target token) at each word end where both tokenizers end a token."""
    pairs = []
    for match in re.finditer(r"\S+", text):
        s, t = source_ends.get(match.end()), target_ends.get(match.end())
        if s is not None and t is not None and min(s, t) >= MIN_CONTEXT_TOKENS:
            pairs.append((s, t))
    return pairs


@torch.no_grad()
def _layer_states(backbone: Backbone, ids: list[list[int]], layer: int) -> list[torch.Tensor]:
    """Hidden states of `layer` for each text, unpadded: [len_i, hidden] float32."""
    input_ids, mask = left_pad(ids, backbone.pad_id)
    states = layer_states(backbone, input_ids, mask, layer).float().cpu()
    return [states[i, input_ids.shape[1] - len(row) :] for i, row in enumerate(ids)]


def _reduce(states: torch.Tensor, positions: list[int], reduction: str) -> torch.Tensor:
    if reduction == "last":
        return states[positions]
    means = states.cumsum(0) / torch.arange(1, len(states) + 1, dtype=states.dtype)[:, None]
    return means[positions]


@dataclass
class PairedActivations:
    """Source and target states after the same prefixes: `source` [n, d_s], `target` [n, d_t]."""

    source: torch.Tensor
    target: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.source)

    def save(self, path: str | Path) -> Path:
        """One safetensors file; `info` goes into its header."""
        with atomic_path(path) as tmp:
            save_file({"source": self.source.contiguous(), "target": self.target.contiguous()}, str(tmp), metadata={"info": json.dumps(self.info)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> PairedActivations:
        from safetensors import safe_open  # noqa: PLC0415

        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as f:
            info = json.loads((f.metadata() or {}).get("info", "{}"))
        return cls(tensors["source"], tensors["target"], info)


def pair_key(
    source: Backbone, target: Backbone, texts: Sequence[str], source_layer: int, target_layer: int, reduction: str, n_pairs: int, seed: int
) -> str:
    """What a cached pairs file was made from; a different key means collecting again."""
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    return f"{source.name}|{target.name}|{source_layer}|{target_layer}|{reduction}|{n_pairs}|{seed}|{digest}"


def collect_pairs(
    source: Backbone,
    target: Backbone,
    texts: Sequence[str],
    source_layer: int,
    target_layer: int,
    *,
    reduction: str = "last",
    n_pairs: int = 5000,
    seed: int = 0,
    batch_size: int = 16,
    cache: str | Path | None = None,
) -> PairedActivations:
    """Up to `n_pairs` paired states (sampled evenly over the texts' shared word ends).

    With `cache`, a file made from the same models, layers, texts and settings
    is loaded instead of running the models, and a new one is written there.
    """
    if reduction not in REDUCTIONS:
        raise TransferError(f"unknown reduction '{reduction}': use one of {', '.join(REDUCTIONS)}")
    source.check_layer(source_layer)
    target.check_layer(target_layer)
    key = pair_key(source, target, texts, source_layer, target_layer, reduction, n_pairs, seed)
    if cache is not None and Path(cache).is_file():
        cached = PairedActivations.load(cache)
        if cached.info.get("key") == key:
            return cached
    encoded = [(token_ends(source, t), token_ends(target, t)) for t in texts]
    positions = [shared_word_ends(t, s_ends, t_ends) for t, ((_, s_ends), (_, t_ends)) in zip(texts, encoded)]
    available = [(i, j) for i, p in enumerate(positions) for j in range(len(p))]
    if not available:
        raise TransferError("the texts give no word boundaries that both tokenizers share: give longer texts")
    chosen = sorted(random.Random(seed).sample(available, min(n_pairs, len(available))))
    wanted: dict[int, list[int]] = {}
    for i, j in chosen:
        wanted.setdefault(i, []).append(j)
    rows = sorted(wanted, key=lambda i: len(encoded[i][0][0]))  # similar lengths per batch: little padding
    src_parts, tgt_parts = [], []
    with progress_bar("paired activations", len(rows)) as advance:
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            src_states = _layer_states(source, [encoded[i][0][0] for i in batch], source_layer)
            tgt_states = _layer_states(target, [encoded[i][1][0] for i in batch], target_layer)
            for i, s_states, t_states in zip(batch, src_states, tgt_states):
                s_pos, t_pos = zip(*(positions[i][j] for j in wanted[i]))
                src_parts.append(_reduce(s_states, list(s_pos), reduction))
                tgt_parts.append(_reduce(t_states, list(t_pos), reduction))
            advance(len(batch))
    info = {
        "key": key,
        "source_model": source.name,
        "target_model": target.name,
        "source_layer": source_layer,
        "target_layer": target_layer,
        "reduction": reduction,
        "n_texts": len(rows),
        "available": len(available),
    }
    pairs = PairedActivations(torch.cat(src_parts), torch.cat(tgt_parts), info)
    if cache is not None:
        pairs.save(cache)
    return pairs
