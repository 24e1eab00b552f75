"""Make a model that refuses: a short fine-tune on the team-written refusals and helpful answers.

The embedded SmolLM2-135M-Instruct complies with nearly every harmful request,
so there is no refusal behaviour to locate. This step creates one, measures it
before and after on the held-out splits, and says so in the model's card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..lora.config import LoRATrainConfig
from ..lora.train import all_weights_trainable, check_out_dir, optimise, save_model, train_lora
from ..models import Backbone
from ..progress import note
from .data import Examples, chat_examples, load_examples
from .measure import refusals, utility_perplexity
from .refusal import RefusalClassifier

ALIGNED_KIND = "safety-aligned model"
ALIGN_FULL = LoRATrainConfig(epochs=1, learning_rate=5e-5, batch_size=8, max_length=192)
ALIGN_LORA = LoRATrainConfig(rank=16, alpha=32.0, epochs=2, learning_rate=5e-4, batch_size=8, max_length=192)


@dataclass(frozen=True)
class HeldOut:
    """The held-out measurement sets and the classifier, built once per model."""

    harmful: Examples
    benign: Examples
    classifier: RefusalClassifier

    @classmethod
    def for_model(cls, backbone: Backbone) -> HeldOut:
        classifier = RefusalClassifier.fit(load_examples("harmful_train").answers, load_examples("benign_train").answers)
        return cls(chat_examples(backbone, "harmful_heldout"), chat_examples(backbone, "benign_heldout"), classifier)


def measure_safety(backbone: Backbone, held_out: HeldOut) -> dict:
    """Refusal on held-out harmful requests, over-refusal and perplexity on held-out benign ones (answers kept)."""
    harmful = refusals(backbone, held_out.harmful, held_out.classifier)
    benign = refusals(backbone, held_out.benign, held_out.classifier)
    return {"refusal": harmful.to_dict(), "over_refusal": benign.to_dict(), "utility_perplexity": utility_perplexity(backbone, held_out.benign)}


def training_examples(backbone: Backbone) -> Examples:
    """Harmful requests with refusals plus benign instructions with helpful answers (the training splits)."""
    return chat_examples(backbone, "harmful_train") + chat_examples(backbone, "benign_train")


def align(backbone: Backbone, out_dir: str | Path, *, lora: bool = False, config: LoRATrainConfig | None = None) -> dict:
    """Fine-tune (all weights, or a LoRA merged in) to refuse harmful requests; save the model folder with its card.

    Returns the card: the training settings and the held-out measurements before and after.
    """
    out = check_out_dir(out_dir)
    config = config or (ALIGN_LORA if lora else ALIGN_FULL)
    held_out = HeldOut.for_model(backbone)
    note("measuring the model before alignment (held-out harmful and benign requests)")
    before = measure_safety(backbone, held_out)
    train = training_examples(backbone)
    with all_weights_trainable(backbone):
        if lora:
            model, losses = train_lora(backbone, train.prompts, train.answers, config)
            model.merge_and_unload()  # type: ignore[attr-defined]
        else:
            losses = optimise(backbone.model, backbone, train.prompts, train.answers, config, "safety alignment").losses
        after = measure_safety(backbone, held_out)
        card = {
            "kind": ALIGNED_KIND,
            "base_model": backbone.name,
            "method": "lora-merged" if lora else "full",
            "train": vars(config),
            "losses": losses,
            "n_train": len(train.prompts),
            "before": before,
            "after": after,
        }
        save_model(backbone, out, card)
    return card


def card_of_kind(folder: str | Path, kind: str) -> dict | None:
    """The persona card of a folder when a safety step of this kind wrote it, else None."""
    path = Path(folder) / "persona.json"
    card = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    return card if card and card.get("kind") == kind else None


def read_align_card(folder: str | Path) -> dict | None:
    """The alignment card of a model folder written by `align`, or None."""
    return card_of_kind(folder, ALIGNED_KIND)
