"""Fine-tuning with preventative steering (Chen et al.): steer during training, remove it after.

Adding the persona vector in the activations (or pre-merging a persona
direction into the weights) while fine-tuning on trait-inducing data lets the
optimiser reach low loss without writing the trait into the adapter; both are
removed when training ends, so the saved adapter carries less of the trait.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

from ..errors import PersonactlError
from ..models import Backbone
from ..steering import SteeringTerm, steer
from .config import LoRATrainConfig
from .direction import LoRADirection, merged
from .train import train_full, train_lora


class DataError(PersonactlError):
    """A fine-tuning data file that cannot be used."""


def read_examples(path: str | Path) -> tuple[list[str], list[str]]:
    """(user messages, answers) from JSONL records {"instruction"|"prompt", "input"?, "output"|"response"}."""
    questions, answers = [], []
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {number}: not JSON ({exc.msg})") from exc
        question = record.get("instruction", record.get("prompt")) if isinstance(record, dict) else None
        answer = record.get("output", record.get("response")) if isinstance(record, dict) else None
        if not isinstance(question, str) or not isinstance(answer, str) or not answer.strip():
            raise DataError(f"{path} line {number}: needs a string 'instruction' (or 'prompt') and a non-empty 'output' (or 'response')")
        extra = record.get("input")
        questions.append(f"{question}\n\n{extra}" if isinstance(extra, str) and extra.strip() else question)
        answers.append(answer)
    if not questions:
        raise DataError(f"{path} holds no examples")
    return questions, answers


def finetune(
    backbone: Backbone,
    prompts: Sequence[str],
    answers: Sequence[str],
    out_dir: str | Path,
    config: LoRATrainConfig = LoRATrainConfig(),
    *,
    steering: Sequence[SteeringTerm] = (),
    premerge: Sequence[tuple[LoRADirection, float]] = (),
    metadata: dict | None = None,
    full: bool = False,
) -> list[float]:
    """LoRA (or, with `full`, all-weight) fine-tuning of formatted prompts -> answers,
    with optional preventative steering.

    The adapter (or the whole model folder) is saved to `out_dir`; the steering
    hooks and the pre-merged weights are gone when this returns, and the base
    model is as before.
    """
    info = {
        **(metadata or {}),
        "preventative": {
            "steering": [{"trait": getattr(t.vector, "trait", "tensor"), "layers": t.layer_list(), "coef": t.coef} for t in steering],
            "premerge": [{"trait": d.metadata.get("trait"), "coef": c} for d, c in premerge],
        },
    }
    with ExitStack() as stack:
        if steering:
            stack.enter_context(steer(backbone, *steering))
        if premerge:
            stack.enter_context(merged(backbone, *premerge))
        if full:
            if premerge:
                raise DataError("full fine-tuning with --premerge-lora is not supported: use LoRA fine-tuning or --steer-vector")
            return train_full(backbone, prompts, answers, out_dir, config, metadata=info)
        model, losses = train_lora(backbone, prompts, answers, config, out_dir=out_dir, metadata=info)
        model.unload()  # type: ignore[attr-defined]
    return losses
