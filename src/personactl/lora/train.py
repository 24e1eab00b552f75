"""Train a LoRA adapter on (prompt, answer) examples with peft; loss on answer tokens only."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Sequence

import torch

from ..activations import make_batch, position_ids
from ..models import Backbone
from ..progress import progress_bar
from .config import LoRATrainConfig
from .direction import AdapterError


def answer_labels(input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Labels that score only the answer tokens (everything else is -100)."""
    return torch.where(response_mask, input_ids, torch.full_like(input_ids, -100))


def _check_examples(prompts: Sequence[str], answers: Sequence[str]) -> None:
    if not prompts or len(prompts) != len(answers):
        raise AdapterError(f"nothing to train on: {len(prompts)} prompts and {len(answers)} answers (empty answers are dropped)")


def optimise(
    model: torch.nn.Module, backbone: Backbone, prompts: Sequence[str], answers: Sequence[str], config: LoRATrainConfig, what: str
) -> list[float]:
    """AdamW over the model's trainable parameters, answer-only loss; returns the loss per step."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate)
    order = list(range(len(prompts)))
    steps_per_epoch = (len(order) + config.batch_size - 1) // config.batch_size
    total = min(config.max_steps or 10**9, steps_per_epoch * config.epochs)
    losses: list[float] = []
    rng = random.Random(config.seed)
    model.train()
    with progress_bar(f"training {what}", total) as advance:
        while len(losses) < total:
            rng.shuffle(order)
            for start in range(0, len(order), config.batch_size):
                if len(losses) >= total:
                    break
                rows = order[start : start + config.batch_size]
                batch = make_batch(backbone, [prompts[i] for i in rows], [answers[i] for i in rows])
                ids, mask = batch.input_ids[:, -config.max_length :], batch.attention_mask[:, -config.max_length :]
                labels = answer_labels(ids, batch.response_mask[:, -config.max_length :])
                loss = model(
                    input_ids=ids.to(backbone.device), attention_mask=mask.to(backbone.device),
                    position_ids=position_ids(mask).to(backbone.device), labels=labels.to(backbone.device),
                ).loss
                loss.backward()
                optimiser.step()
                optimiser.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
                advance(1)
    model.eval()
    return losses


def _training_metadata(backbone: Backbone, config: LoRATrainConfig, losses: list[float], metadata: dict | None) -> dict:
    return {**(metadata or {}), "base_model": backbone.name, "base_model_type": backbone.model_type, "train": vars(config), "losses": losses}


def train_lora(
    backbone: Backbone,
    prompts: Sequence[str],
    answers: Sequence[str],
    config: LoRATrainConfig = LoRATrainConfig(),
    out_dir: str | Path | None = None,
    metadata: dict | None = None,
) -> tuple[object, list[float]]:
    """Train a LoRA on formatted prompts -> answers. Returns (peft model, loss per step).

    The base model is wrapped in place; call `.unload()` on the result to get it
    back untouched. With `out_dir`, the adapter is saved there (a PEFT folder)
    with `persona.json` holding `metadata` and the training settings.
    """
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    _check_examples(prompts, answers)
    torch.manual_seed(config.seed)
    lora_config = LoraConfig(
        r=config.rank, lora_alpha=config.alpha, use_rslora=config.rslora, lora_dropout=config.dropout,
        target_modules=config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(backbone.model, lora_config)
    losses = optimise(model, backbone, prompts, answers, config, "LoRA")
    if out_dir is not None:
        save_adapter(model, out_dir, _training_metadata(backbone, config, losses, metadata))
    return model, losses


def train_full(
    backbone: Backbone,
    prompts: Sequence[str],
    answers: Sequence[str],
    out_dir: str | Path,
    config: LoRATrainConfig = LoRATrainConfig(),
    metadata: dict | None = None,
) -> list[float]:
    """Full fine-tuning (every weight); the result is saved as a model folder and the base restored."""
    _check_examples(prompts, answers)
    torch.manual_seed(config.seed)
    original = {k: v.detach().clone() for k, v in backbone.model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in backbone.model.named_parameters()}
    try:
        for p in backbone.model.parameters():
            p.requires_grad_(True)
        losses = optimise(backbone.model, backbone, prompts, answers, config, "all weights")
        backbone.model.save_pretrained(str(out_dir))
        (Path(out_dir) / "persona.json").write_text(json.dumps(_training_metadata(backbone, config, losses, metadata), indent=2, default=str))
    finally:
        with torch.no_grad():
            backbone.model.load_state_dict(original)
        for n, p in backbone.model.named_parameters():
            p.requires_grad_(flags[n])
    return losses


def save_adapter(model: object, out_dir: str | Path, metadata: dict) -> Path:
    """Save a PEFT adapter folder plus persona.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))  # type: ignore[attr-defined]
    (out / "persona.json").write_text(json.dumps(metadata, indent=2, default=str))
    return out
