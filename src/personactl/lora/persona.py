"""A persona direction from a trait: train a positive and a negative LoRA, take their difference.

Both adapters learn from the trait's contrastive answers but see only the
question, without the instruction that produced the answer, so the adapter
itself has to carry the trait.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from .._io import write_text_atomic
from ..extraction import ContrastivePair, ExtractionSettings, generate_pairs, load_pairs, save_pairs
from ..generation import chat_prompt, format_prompts
from ..models import Backbone
from ..traits import AnyTrait
from .config import LoRATrainConfig
from .direction import PERSONA, WEIGHTS, LoRADirection, difference
from .train import train_lora

SETTINGS = "settings.json"


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

    An interrupted run resumes: out_dir/pairs.jsonl is reused when it was made
    from the same trait, model and extraction settings (recorded in
    out_dir/settings.json with the file's hash), and a finished pos/ or neg/
    adapter when it was trained on those very pairs with the same training
    settings (recorded in its persona card). Anything else is made afresh.
    """
    out = Path(out_dir)
    pairs_file, settings_file = out / "pairs.jsonl", out / SETTINGS
    wanted = {"trait": trait.name, "trait_sha256": _sha256(trait.model_dump_json().encode()), "model": backbone.name, "extraction": asdict(settings)}
    recorded = _recorded(settings_file)
    if pairs_file.is_file() and recorded.get("pairs") == wanted and recorded.get("pairs_sha256") == _sha256(pairs_file.read_bytes()):
        pairs = load_pairs(pairs_file)
    else:
        pairs = generate_pairs(backbone, trait, settings)
        save_pairs(pairs, pairs_file)
        write_text_atomic(settings_file, json.dumps({"pairs": wanted, "pairs_sha256": _sha256(pairs_file.read_bytes())}, indent=2))
    made_from = {"pairs_sha256": _sha256(pairs_file.read_bytes()), "model": backbone.name, "train": json.loads(json.dumps(vars(train), default=str))}
    sides = {}
    for side in ("pos", "neg"):
        folder = out / side
        if not ((folder / WEIGHTS).is_file() and _made_from(folder) == made_from):
            prompts, answers = training_examples(backbone, pairs, side)
            model, _ = train_lora(
                backbone, prompts, answers, train, out_dir=folder, metadata={"trait": trait.name, "side": side, "made_from": made_from}
            )
            model.unload()  # type: ignore[attr-defined]
        sides[side] = LoRADirection.load(folder)
    diff = difference(sides["pos"], sides["neg"], {"trait": trait.name, "kind": "persona_direction"})
    diff.save(out / "diff")
    return diff


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _recorded(path: Path) -> dict:
    """What settings.json says the pairs were made from ({} when absent or unreadable: nothing is reused)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _made_from(folder: Path) -> dict | None:
    """The pairs and training settings an adapter folder was trained from (its persona card), if it says."""
    card = _recorded(folder / PERSONA)
    return card.get("made_from")
