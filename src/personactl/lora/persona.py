"""A persona direction from a trait: train a positive and a negative LoRA, take their difference.

Both adapters learn from the trait's contrastive answers but see only the
question, without the instruction that produced the answer, so the adapter
itself has to carry the trait.
"""

from __future__ import annotations

from pathlib import Path

from ..extraction import ContrastivePair, ExtractionSettings, generate_pairs, load_pairs, save_pairs
from ..generation import chat_prompt, format_prompts
from ..models import Backbone
from ..traits import AnyTrait
from .config import LoRATrainConfig
from .direction import LoRADirection, difference
from .train import train_lora


def training_examples(backbone: Backbone, pairs: list[ContrastivePair], side: str) -> tuple[list[str], list[str]]:
    """(prompts without the instruction, answers) of one side ("pos" or "neg")."""
    keep = [p for p in pairs if (p.pos_answer if side == "pos" else p.neg_answer).strip()]
    prompts = format_prompts(backbone, [chat_prompt(p.question) for p in keep]) if keep and keep[0].question else [""] * len(keep)
    answers = [p.pos_answer if side == "pos" else p.neg_answer for p in keep]
    return prompts, answers


def extract_lora_direction(
    backbone: Backbone,
    trait: AnyTrait,
    out_dir: str | Path,
    *,
    settings: ExtractionSettings = ExtractionSettings(),
    train: LoRATrainConfig = LoRATrainConfig(),
) -> LoRADirection:
    """Write out_dir/{pairs.jsonl, pos/, neg/, diff/} and return the diff direction.

    Reuses out_dir/pairs.jsonl and finished pos/ or neg/ folders, so an
    interrupted run resumes.
    """
    out = Path(out_dir)
    pairs_file = out / "pairs.jsonl"
    if pairs_file.exists():
        pairs = load_pairs(pairs_file)
    else:
        pairs = generate_pairs(backbone, trait, settings)
        save_pairs(pairs, pairs_file)
    sides = {}
    for side in ("pos", "neg"):
        folder = out / side
        if not (folder / "adapter_model.safetensors").exists():
            prompts, answers = training_examples(backbone, pairs, side)
            model, _ = train_lora(backbone, prompts, answers, train, out_dir=folder, metadata={"trait": trait.name, "side": side})
            model.unload()  # type: ignore[attr-defined]
        sides[side] = LoRADirection.load(folder)
    diff = difference(sides["pos"], sides["neg"], {"trait": trait.name, "kind": "persona_direction"})
    diff.save(out / "diff")
    return diff
