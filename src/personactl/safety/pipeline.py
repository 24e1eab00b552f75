"""The whole study in one resumable run: align -> identify -> prune check -> six fine-tunes -> dynamics -> report.

Every step writes its files into the run folder and is skipped when they are
already there, so a stopped run goes on where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .._io import check_replaceable, write_text_atomic
from ..lora.direction import LoRADirection, merged
from ..models import Backbone, load_model
from ..progress import note
from .align import HeldOut, align, card_of_kind, read_align_card
from .data import chat_examples
from .dynamics import score_dynamics
from .finetune import CARD_KIND, frozen_finetune
from .identify import (
    MASKS,
    RANDOM_MASKS,
    SAFETY_SCORES,
    IdentifySettings,
    identify,
    load_masks,
    load_scores,
    require_summary,
    safety_calibration_scores,
)
from .masks import Tensors
from .measure import refusals
from .prune import PRUNE_CHECK, prune_check

FINETUNES: tuple[tuple[str, str], ...] = tuple((m, f) for m in ("full", "lora") for f in ("safety", "none", "random"))
DYNAMICS = "dynamics.json"
RUN_MARKERS = ("results.json", "model/persona.json")  # a run folder this tool wrote, finished or not


def finetune_card(folder: str | Path) -> dict | None:
    return card_of_kind(folder, CARD_KIND)


@dataclass(frozen=True)
class Reference:
    """What every fine-tune is compared with: the identify folder's settings, masks and safety scores, loaded once."""

    settings: dict
    frozen: Tensors
    random: Tensors
    scores: Tensors

    @classmethod
    def load(cls, backbone: Backbone, identify_dir: str | Path) -> Reference:
        folder = Path(identify_dir)
        return cls(
            require_summary(folder)["settings"],
            load_masks(backbone, folder / MASKS),
            load_masks(backbone, folder / RANDOM_MASKS),
            load_scores(backbone, folder / SAFETY_SCORES),
        )


def measure_finetune(before: Backbone, reference: Reference, finetuned: str | Path, held_out: HeldOut) -> dict:
    """Refusal and Wanda-score dynamics of one fine-tuned model (folder) or adapter against the model it started from."""
    folder = Path(finetuned)

    def measure(model: Backbone) -> dict:
        harmful = refusals(model, held_out.harmful, held_out.classifier)
        benign = refusals(model, held_out.benign, held_out.classifier)
        after = safety_calibration_scores(model, reference.settings["nsamples"])
        return {
            "refusal": harmful.to_dict(),
            "over_refusal": benign.to_dict(with_answers=False),
            "scores": score_dynamics(reference.scores, after, reference.frozen, reference.random),
        }

    if (folder / "adapter_config.json").is_file():
        with merged(before, (LoRADirection.load(folder), 1.0)):
            return measure(before)
    return measure(load_model(str(folder), device=str(before.device)))


def run_safety(model: str, out_dir: str | Path, *, settings: dict | None = None, lora_align: bool = False) -> dict:
    """Run (or resume) the whole study in `out_dir`; returns the results written to results.json."""
    out = check_replaceable(out_dir, RUN_MARKERS)
    out.mkdir(parents=True, exist_ok=True)
    aligned_dir = out / "model"
    card = read_align_card(aligned_dir)
    if card is None:
        note(f"step 1/6: aligning {model} to refuse harmful requests")
        card = align(load_model(model), aligned_dir, lora=lora_align)
    backbone = load_model(str(aligned_dir))
    held_out = HeldOut.for_model(backbone)
    identify_dir = out / "identify"
    note("step 2/6: Wanda scores and set-difference masks")
    summary = identify(backbone, identify_dir, IdentifySettings(model=str(aligned_dir), **(settings or {})))
    prune_path = identify_dir / PRUNE_CHECK
    if not prune_path.is_file():
        note("step 3/6: prune check")
        prune_check(backbone, identify_dir, held_out)
    reference = Reference.load(backbone, identify_dir)
    masks = {"safety": reference.frozen, "random": reference.random, "none": None}
    utility = chat_examples(backbone, "benign_train")
    finetunes: dict[str, dict] = {}
    for method, freeze in FINETUNES:
        name = f"{method}-{freeze}"
        folder = out / "finetune" / name
        if finetune_card(folder) is None:
            note(f"step 4/6: fine-tune {name}")
            frozen_finetune(backbone, utility, folder, masks[freeze], peft=method == "lora", freeze_label=freeze)
        dynamics_path = folder / DYNAMICS
        if not dynamics_path.is_file():
            note(f"step 5/6: refusal and score dynamics of {name}")
            write_text_atomic(dynamics_path, json.dumps(measure_finetune(backbone, reference, folder, held_out), indent=2))
        finetunes[name] = {"card": finetune_card(folder), **json.loads(dynamics_path.read_text(encoding="utf-8"))}
    results = {
        "model": model,
        "align": card,
        "identify": summary,
        "prune_check": json.loads(prune_path.read_text(encoding="utf-8")),
        "finetunes": finetunes,
    }
    write_text_atomic(out / "results.json", json.dumps(results, indent=2))
    return results
