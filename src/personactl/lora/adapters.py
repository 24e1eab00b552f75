"""Plug-and-play persona adapters: JSONL examples -> a small LoRA, a registry, runtime swapping, export.

An adapter folder is a plain PEFT adapter plus `persona.json` (the persona
card: name, base model, data hash, metrics). Adapters live in a registry folder
(`PERSONACTL_ADAPTERS`, default `~/.local/share/personactl/adapters`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._io import check_replaceable
from ..activations import make_batch, position_ids
from ..errors import PersonactlError
from ..generation import chat_prompt, format_prompts
from ..model_folder import save_model_folder
from ..models import Backbone
from .checkpoint import STATE, remove_checkpoint
from .config import LoRATrainConfig
from .direction import PERSONA, AdapterError, LoRADirection, combine, merged, read_json_object
from .train import answer_labels, optimise, save_adapter, save_folder

# Attention projections per architecture (q/k/v/o), as PEFT target names or a regex.
ATTENTION_TARGETS: dict[str, Any] = {
    **{t: ["q_proj", "k_proj", "v_proj", "o_proj"] for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text")},
    "phi3": ["qkv_proj", "o_proj"],
    "gpt2": r".*\.attn\.(c_attn|c_proj)$",
    "gpt_neox": ["query_key_value", "dense"],
}
MAX_RECORD_CHARS = 4000


class PersonaDataError(PersonactlError):
    """A persona dataset line that cannot be used."""


def adapter_defaults(backbone: Backbone) -> LoRATrainConfig:
    """rank 16, alpha 32, dropout 0.05, attention projections of this architecture."""
    if backbone.model_type not in ATTENTION_TARGETS:
        raise AdapterError(
            f"no default adapter targets for architecture '{backbone.model_type}': pass target module names "
            f"(known: {', '.join(sorted(ATTENTION_TARGETS))})"
        )
    targets = ATTENTION_TARGETS[backbone.model_type]
    return LoRATrainConfig(
        rank=16, alpha=32.0, rslora=False, dropout=0.05, epochs=1, target_modules=targets if isinstance(targets, str) else tuple(targets)
    )


@dataclass
class PersonaData:
    """Examples, the file line each came from (`lines`, 1-based; empty when built in code) and what was dropped (line numbers)."""

    questions: list[str]
    answers: list[str]
    empty: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    too_long: list[int] = field(default_factory=list)
    sha256: str = ""
    lines: list[int] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"{len(self.questions)} examples"]
        for label, lines in (("empty outputs", self.empty), ("duplicates", self.duplicates), ("over-long", self.too_long)):
            if lines:
                parts.append(f"{len(lines)} {label} skipped (lines {', '.join(map(str, lines[:8]))}{'...' if len(lines) > 8 else ''})")
        return "; ".join(parts)


ALIASES = {"prompt": "instruction", "response": "output"}


def read_persona_records(path: str | Path) -> PersonaData:
    """Every record of a JSONL {"instruction", "input"?, "output"} file ("prompt"/"response" also work) in file order,
    with its line number: nothing is skipped (screening keeps what it does not flag). The question is the instruction,
    then the input after a blank line; a malformed line is an error naming its line number and field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PersonaDataError(f"cannot read {path}: {exc.strerror}") from exc
    data = PersonaData([], [], sha256=hashlib.sha256(raw).hexdigest())
    for number, line in enumerate(raw.decode("utf-8", errors="replace").split("\n"), 1):  # JSONL lines end at \n only
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PersonaDataError(f"{path} line {number}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise PersonaDataError(f"{path} line {number}: expected an object with instruction/output")
        record = {ALIASES.get(k, k): v for k, v in record.items()}
        for key in ("instruction", "output"):
            if not isinstance(record.get(key), str):
                raise PersonaDataError(f"{path} line {number}: field '{key}' is missing or not a string")
        if "input" in record and not isinstance(record["input"], str):
            raise PersonaDataError(f"{path} line {number}: field 'input' must be a string")
        data.questions.append(record["instruction"] + (f"\n\n{record['input']}" if record.get("input", "").strip() else ""))
        data.answers.append(record["output"])
        data.lines.append(number)
    return data


def read_persona_data(path: str | Path, max_chars: int = MAX_RECORD_CHARS) -> PersonaData:
    """The training examples of a persona dataset (see `read_persona_records`): empty outputs, exact duplicates and
    records over `max_chars` are skipped and listed by line number."""
    records = read_persona_records(path)
    data = PersonaData([], [], sha256=records.sha256)
    seen: set[tuple[str, str]] = set()
    for question, answer, number in zip(records.questions, records.answers, records.lines):
        if not answer.strip():
            data.empty.append(number)
        elif (question, answer) in seen:
            data.duplicates.append(number)
        elif len(question) + len(answer) > max_chars:
            data.too_long.append(number)
        else:
            seen.add((question, answer))
            data.questions.append(question)
            data.answers.append(answer)
            data.lines.append(number)
    if not data.questions:
        raise PersonaDataError(f"{path} has no usable examples ({data.describe()})")
    return data


@torch.no_grad()
def answer_loss(model: torch.nn.Module, backbone: Backbone, prompts: Sequence[str], answers: Sequence[str], batch_size: int = 8) -> float:
    """Mean answer-token loss (perplexity = exp of it)."""
    total, count = 0.0, 0
    for start in range(0, len(prompts), batch_size):
        batch = make_batch(backbone, prompts[start : start + batch_size], answers[start : start + batch_size])
        labels = answer_labels(batch.input_ids, batch.response_mask)
        n = int((labels[:, 1:] != -100).sum())
        loss = model(
            input_ids=batch.input_ids.to(backbone.device),
            attention_mask=batch.attention_mask.to(backbone.device),
            position_ids=position_ids(batch.attention_mask).to(backbone.device),
            labels=labels.to(backbone.device),
        ).loss
        total, count = total + float(loss) * n, count + n
    return total / max(count, 1)


def train_adapter(
    backbone: Backbone,
    data_path: str | Path,
    name: str,
    out_dir: str | Path,
    config: LoRATrainConfig | None = None,
    heldout: float = 0.1,
    *,
    resume: bool = True,
) -> dict[str, Any]:
    """Train a persona adapter on a JSONL file; save it with its card; return the card.

    A held-out share of the examples gives the validation loss and perplexity
    after every epoch. Progress is checkpointed beside `out_dir`
    (`.NAME.checkpoint`), and a rerun with the same settings and data goes on
    from there unless `resume` is False. The base model is unwrapped again when
    this returns.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training  # noqa: PLC0415

    check_name(name)
    out_dir = Path(out_dir)
    check_replaceable(out_dir, PERSONA)
    checkpoint = out_dir.with_name(f".{out_dir.name}.checkpoint")
    check_replaceable(checkpoint, STATE)
    config = config or adapter_defaults(backbone)
    data = read_persona_data(data_path)
    prompts = format_prompts(backbone, [chat_prompt(q) for q in data.questions])
    order = list(range(len(prompts)))
    random.Random(config.seed).shuffle(order)
    n_val = max(1, round(heldout * len(order))) if len(order) > 4 else 0
    val, train = order[:n_val], order[n_val:]
    if not resume:
        remove_checkpoint(checkpoint)
    torch.manual_seed(config.seed)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,  # type: ignore[arg-type]  # PEFT annotates int; its scaling alpha / r takes any number
        use_rslora=config.rslora,
        lora_dropout=config.dropout,
        target_modules=config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    if getattr(backbone.model, "is_quantized", False):
        prepare_model_for_kbit_training(backbone.model, use_gradient_checkpointing=config.gradient_checkpointing)
    model = get_peft_model(backbone.model, lora)
    val_prompts, val_answers = [prompts[i] for i in val], [data.answers[i] for i in val]

    def validate(epoch: int) -> dict[str, float]:
        val_loss = answer_loss(model, backbone, val_prompts, val_answers) if val else math.nan
        return {"val_loss": val_loss, "val_perplexity": math.exp(val_loss)}

    try:
        state = optimise(
            model,
            backbone,
            [prompts[i] for i in train],
            [data.answers[i] for i in train],
            config,
            name,
            checkpoint=checkpoint,
            fingerprint=f"{backbone.name} {data.sha256} {heldout}",
            on_epoch_end=validate,
        )
        card = {
            "name": name,
            "base_model": backbone.name,
            "base_model_type": backbone.model_type,
            "data": str(data_path),
            "data_sha256": data.sha256,
            "data_report": data.describe(),
            "n_train": len(train),
            "n_val": len(val),
            "val_indices": sorted(val),
            "train": vars(config),
            "metrics": state.epochs,
            "kind": "persona_adapter",
        }
        save_adapter(model, out_dir, card)  # built aside and swapped in: no half-written adapter under the real name
        remove_checkpoint(checkpoint)
    finally:
        model.unload()
    return card


def registry_dir() -> Path:
    """Where named adapters live: $PERSONACTL_ADAPTERS or ~/.local/share/personactl/adapters."""
    return Path(os.environ.get("PERSONACTL_ADAPTERS", Path.home() / ".local" / "share" / "personactl" / "adapters"))


NAME_RULE = re.compile(r"[\w-][\w.-]*")


def check_name(name: str) -> str:
    """An adapter name is one folder name inside the registry: letters, digits, '.', '_', '-', not starting with '.'."""
    if not NAME_RULE.fullmatch(name):
        raise AdapterError(f"adapter name '{name}' is not allowed: use letters, digits, '.', '_' or '-' (not starting with '.')")
    return name


def adapter_target(name: str, out_dir: str | Path | None = None) -> Path:
    """Where `adapter train --name NAME [--out DIR]` writes, checked before any training starts."""
    check_name(name)
    target = Path(out_dir) if out_dir is not None else registry_dir() / name
    check_replaceable(target, PERSONA)
    return target


def read_card(folder: str | Path) -> dict[str, Any]:
    """The persona card (persona.json) of an adapter folder; AdapterError when it is missing or corrupt."""
    path = Path(folder) / PERSONA
    if not path.is_file():
        raise AdapterError(f"{folder} has no persona card ({PERSONA}): it is not an adapter trained by personactl")
    return read_json_object(path)


def list_adapters(folder: str | Path | None = None) -> list[dict[str, Any]]:
    """Persona cards of every adapter in the registry folder, sorted by name."""
    root = Path(folder) if folder else registry_dir()
    return [{**read_card(card.parent), "path": str(card.parent)} for card in sorted(root.glob(f"*/{PERSONA}"))]


def blend_adapters(spec: str, name: str, folder: str | Path | None = None) -> tuple[LoRADirection, Path]:
    """Blend registry adapters exactly ('a=0.5,b=0.5') into a new registry adapter NAME; returns it and its folder."""
    check_name(name)
    root = Path(folder) if folder else registry_dir()
    target = check_replaceable(root / name, PERSONA)
    blend = combine(parse_blend(spec, folder), {"name": name, "kind": "persona_blend", "blend": spec})
    return blend, blend.save(target)


def resolve_adapter(name_or_path: str | Path, folder: str | Path | None = None) -> Path:
    """A registry name or a folder path -> the adapter folder (names never escape the registry)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    root = Path(folder) if folder else registry_dir()
    if path.name != str(name_or_path) or not (root / path.name).is_dir():
        known = ", ".join(card.parent.name for card in sorted(root.glob(f"*/{PERSONA}"))) or "none yet"
        raise AdapterError(f"no adapter '{name_or_path}' in {root} (known: {known}); train one with `personactl adapter train`")
    return root / path.name


def parse_blend(spec: str, folder: str | Path | None = None) -> list[tuple[LoRADirection, float]]:
    """'a=0.5,b=-0.5' -> [(adapter a, 0.5), (adapter b, -0.5)] from the registry (or folders)."""
    terms = []
    for part in spec.split(","):
        key, _, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError as exc:
            raise AdapterError(f"'{part.strip()}' is not NAME=WEIGHT (e.g. pirate_coder=0.5)") from exc
        terms.append((LoRADirection.load(resolve_adapter(key.strip(), folder)), weight))
    return terms


class PersonaSwitcher:
    """Several persona adapters on one loaded base model; switching is a flag flip, not a reload.

    `load(name, folder)`, `use(name)`, `use(None)` for the bare base model,
    `close()` (or the with-block) removes every adapter again.
    """

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.model: Any = None
        self.active: str | None = None

    def load(self, name: str, folder: str | Path) -> None:
        from peft import PeftModel  # noqa: PLC0415

        LoRADirection.load(folder).check_base(self.backbone)
        if self.model is None:
            self.model = PeftModel.from_pretrained(self.backbone.model, str(folder), adapter_name=name)
        else:
            self.model.load_adapter(str(folder), adapter_name=name)
        self.use(self.active)

    def use(self, name: str | None) -> None:
        if self.model is None:
            if name is not None:
                raise AdapterError(f"adapter '{name}' is not loaded: call load() first")
            return
        if name is None:
            self.model.base_model.disable_adapter_layers()
        else:
            if name not in self.model.peft_config:
                raise AdapterError(f"adapter '{name}' is not loaded (loaded: {', '.join(self.model.peft_config)})")
            self.model.base_model.enable_adapter_layers()
            self.model.set_adapter(name)
        self.active = name

    def close(self) -> None:
        if self.model is not None:
            self.model.unload()
            self.model = None
            self.active = None

    def __enter__(self) -> PersonaSwitcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_adapter(backbone: Backbone, adapter: str | Path, out_dir: str | Path, coef: float = 1.0) -> Path:
    """A standalone model folder (weights with coef * adapter merged, tokenizer) that plain transformers loads."""
    direction = LoRADirection.load(adapter)
    check_replaceable(out_dir, PERSONA)
    with merged(backbone, (direction, coef)):
        return save_folder(
            out_dir,
            lambda tmp: save_model_folder(backbone.model, backbone.tokenizer, tmp),
            {**direction.metadata, "merged_from": str(adapter), "coef": coef},
        )
