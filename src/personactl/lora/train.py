"""Train a LoRA adapter on (prompt, answer) examples with peft; loss on answer tokens only."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .._io import check_replaceable, replace_folder, temp_folder_beside, write_text_atomic
from ..activations import make_batch, position_ids
from ..model_folder import save_model_folder
from ..models import Backbone
from ..progress import progress_bar
from .checkpoint import TrainState, load_checkpoint, save_checkpoint
from .config import LoRATrainConfig
from .direction import PERSONA, AdapterError


def answer_labels(input_ids: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Labels that score only the answer tokens (everything else is -100)."""
    return torch.where(response_mask, input_ids, torch.full_like(input_ids, -100))


def _check_examples(prompts: Sequence[str], answers: Sequence[str]) -> None:
    if not prompts or len(prompts) != len(answers):
        raise AdapterError(f"nothing to train on: {len(prompts)} prompts and {len(answers)} answers (empty answers are dropped)")


def batch_schedule(n_examples: int, config: LoRATrainConfig) -> list[tuple[int, list[int]]]:
    """(epoch, example rows) of every optimiser step, fixed by the seed, so a resumed run replays the same order."""
    rng = random.Random(config.seed)
    order = list(range(n_examples))
    per_step = config.batch_size * config.grad_accum
    steps: list[tuple[int, list[int]]] = []
    for epoch in range(config.epochs):
        rng.shuffle(order)
        steps += [(epoch, order[s : s + per_step]) for s in range(0, n_examples, per_step)]
    return steps[: config.max_steps]


def _micro_batches(backbone: Backbone, prompts: Sequence[str], answers: Sequence[str], rows: list[int], config: LoRATrainConfig) -> list[dict]:
    batches = []
    for start in range(0, len(rows), config.batch_size):
        part = rows[start : start + config.batch_size]
        batch = make_batch(backbone, [prompts[i] for i in part], [answers[i] for i in part])
        ids, mask = batch.input_ids[:, -config.max_length :], batch.attention_mask[:, -config.max_length :]
        batches.append(
            {
                "input_ids": ids,
                "attention_mask": mask,
                "position_ids": position_ids(mask),
                "labels": answer_labels(ids, batch.response_mask[:, -config.max_length :]),
            }
        )
    return batches


def _accumulate(model: torch.nn.Module, backbone: Backbone, batches: list[dict]) -> float:
    """Backpropagate the token-weighted mean answer loss over micro-batches (the same gradient as one big batch)."""
    tokens = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    total_tokens, total = max(sum(tokens), 1), 0.0
    for batch, n in zip(batches, tokens):
        loss = model(**{k: v.to(backbone.device) for k, v in batch.items()}).loss * (n / total_tokens)
        loss.backward()
        total += float(loss.detach())
    return total


@contextmanager
def _gradient_checkpointing(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Recompute activations in the backward pass (less memory, ~30% more time); off again afterwards."""
    if not enabled:
        yield
        return
    prefix = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"  # renamed in transformers 5
    disable = getattr(model, f"{prefix}_checkpointing_disable")
    getattr(model, f"{prefix}_checkpointing_enable")(**{f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}})
    try:
        yield
    finally:
        disable()


def optimise(
    model: torch.nn.Module,
    backbone: Backbone,
    prompts: Sequence[str],
    answers: Sequence[str],
    config: LoRATrainConfig,
    what: str,
    *,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    on_epoch_end: Callable[[int], dict[str, Any]] | None = None,
) -> TrainState:
    """AdamW over the model's trainable parameters, answer-only loss.

    With `checkpoint`, progress is saved every `config.checkpoint_every` steps
    and at each epoch's end, and a run finding a checkpoint of the same
    settings (`fingerprint`) there goes on from it. `on_epoch_end(epoch)`
    returns the epoch's record (e.g. validation loss), kept in the state.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=config.learning_rate)
    schedule = batch_schedule(len(prompts), config)
    fingerprint = json.dumps({"config": vars(config), "n": len(prompts), "extra": fingerprint}, sort_keys=True, default=str)
    state = (load_checkpoint(checkpoint, model, optimiser, fingerprint) if checkpoint else None) or TrainState(fingerprint)
    model.train()
    with _gradient_checkpointing(model, config.gradient_checkpointing), progress_bar(f"training {what}", len(schedule)) as advance:
        advance(state.step)
        for step in range(state.step, len(schedule)):
            epoch, rows = schedule[step]
            state.losses.append(_accumulate(model, backbone, _micro_batches(backbone, prompts, answers, rows, config)))
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)
            state.step = step + 1
            epoch_done = state.step == len(schedule) or schedule[state.step][0] != epoch
            if epoch_done and on_epoch_end is not None:
                model.eval()
                state.epochs.append({"epoch": epoch + 1, "train_loss": state.losses[-1], **on_epoch_end(epoch)})
                model.train()
            if checkpoint is not None and (epoch_done or state.step % config.checkpoint_every == 0):
                save_checkpoint(checkpoint, model, optimiser, state)
            advance(1)
    model.eval()
    return state


def training_card(backbone: Backbone, config: LoRATrainConfig, losses: list[float], metadata: dict | None) -> dict:
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
    if out_dir is not None:
        check_replaceable(out_dir, PERSONA)
    torch.manual_seed(config.seed)
    lora_config = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,  # type: ignore[arg-type]  # PEFT annotates int; its scaling alpha / r takes any number
        use_rslora=config.rslora,
        lora_dropout=config.dropout,
        target_modules=config.target_modules if isinstance(config.target_modules, str) else list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(backbone.model, lora_config)
    losses = optimise(model, backbone, prompts, answers, config, "LoRA").losses
    if out_dir is not None:
        save_adapter(model, out_dir, training_card(backbone, config, losses, metadata))
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
    check_replaceable(out_dir, PERSONA)
    torch.manual_seed(config.seed)
    with all_weights_trainable(backbone):
        losses = optimise(backbone.model, backbone, prompts, answers, config, "all weights").losses
        save_model(backbone, out_dir, training_card(backbone, config, losses, metadata))
    return losses


@contextmanager
def all_weights_trainable(backbone: Backbone) -> Iterator[None]:
    """Every weight trainable inside; on exit the weights and requires_grad flags are as before, bit-exactly."""
    original = {k: v.detach().clone() for k, v in backbone.model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in backbone.model.named_parameters()}
    try:
        for p in backbone.model.parameters():
            p.requires_grad_(True)
        yield
    finally:
        with torch.no_grad():
            backbone.model.load_state_dict(original)
        for n, p in backbone.model.named_parameters():
            p.requires_grad_(flags[n])


def save_model(backbone: Backbone, out_dir: str | Path, card: dict) -> Path:
    """Save the backbone as a model folder (weights, config, tokenizer) with its persona card, as a whole."""
    return save_folder(out_dir, lambda tmp: save_model_folder(backbone.model, backbone.tokenizer, tmp), card)


def check_out_dir(out_dir: str | Path) -> Path:
    """Refuse, before any training, an output folder that a finished run may not replace (see `save_folder`)."""
    return check_replaceable(out_dir, PERSONA)


def save_adapter(model: object, out_dir: str | Path, metadata: dict) -> Path:
    """Save a PEFT adapter folder plus persona.json, as a whole (see `save_folder`)."""
    return save_folder(out_dir, lambda tmp: model.save_pretrained(str(tmp)), metadata)  # type: ignore[attr-defined]


def save_folder(out_dir: str | Path, write: Callable[[Path], object], card: dict) -> Path:
    """Build a folder with `write(tmp)` and its persona card beside `out_dir`, then swap it in.

    The card (persona.json) marks the folder as ours: a rerun may replace it, while a
    folder of someone else's files is refused (OutputError) and left as it is.
    """
    out = Path(out_dir)
    check_replaceable(out, PERSONA)
    tmp = temp_folder_beside(out)
    try:
        write(tmp)
        write_text_atomic(tmp / PERSONA, json.dumps(card, indent=2, default=str))
        replace_folder(tmp, out, owned=PERSONA)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
