"""Persona adapters end to end on SmolLM2: train each shipped persona (skipped when its adapter exists),
evaluate adherence and perplexity drift, and write a section of docs/experiments.md.

Run: .venv/bin/python experiments/persona_adapters.py   (about 10 minutes per persona on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
from importlib.resources import files
from pathlib import Path

from _doc import write_section

from personactl import adherence, load_model, train_adapter
from personactl.lora.adapters import adapter_defaults
from personactl.lora.adherence import neutral_text
from personactl.lora.config import LoRATrainConfig

PERSONAS = ("pirate_coder", "formal_butler")


def _ci(values: list[float]) -> str:
    return f"{values[0]:.1f} [{values[1]:.1f}, {values[2]:.1f}]"


def _targets(targets) -> str:
    names = [targets] if isinstance(targets, str) else list(targets)
    short = [n.split("_")[0] for n in names]
    return "/".join(short) if all(len(n) == 1 for n in short) else ", ".join(names)


def note(settings: dict) -> str:
    """The section's note, from the adapters' own cards and the evaluation settings (no number written by hand)."""
    trained = settings["train"]
    same = all(t == trained[0] for t in trained)
    t = trained[0]
    adapters = (
        f"rank {t['rank']}, alpha {t['alpha']:g}, dropout {t['dropout']:g}, {_targets(t['target_modules'])}, "
        f"{t['epochs']} epoch{'s' * (t['epochs'] != 1)} at lr {t['learning_rate']:g}, batch {t['batch_size']}"
    )
    if not same:
        adapters += " (settings differ between personas: see docs/experiments/persona_adapters.json)"
    n_fit = ", ".join(sorted({str(n) for n in settings["n_fit"]}))
    n_eval = ", ".join(sorted({str(n) for n in settings["n_eval"]}))
    return (
        f"Adapters: {adapters}. Adherence (0-100): the embedding classifier fitted on {n_fit} persona answers vs the base "
        f"model's answers to the same instructions, scored on the {n_eval} held-out instructions (greedy, "
        f"{settings['max_new_tokens']} tokens); brackets: {settings.get('intervals', 'bootstrap')} 95% CIs; chance is 50 on a "
        f"balanced set. Neutral "
        f"perplexity: the {settings['n_neutral']} team-written answers of data/neutral_qa.jsonl."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=Path("runs/adapters"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--n-fit", type=int, default=48, help="persona answers the adherence classifier is fitted on")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    backbone = load_model("smollm2-135m")
    rows = []
    settings = {
        "train": [],
        "n_fit": [],
        "n_eval": [],
        "max_new_tokens": args.max_new_tokens,
        "n_neutral": len(neutral_text()[0]),
        "intervals": "Student-t (over questions)",
    }  # how they were computed; older sections used a bootstrap
    for name in PERSONAS:
        data = files("personactl") / "data" / "personas" / f"{name}.jsonl"
        folder = args.registry / name
        if not (folder / "persona.json").is_file():
            config = LoRATrainConfig(**{**vars(adapter_defaults(backbone)), "epochs": args.epochs, "learning_rate": args.lr})
            train_adapter(backbone, data, name, folder, config)
        card = json.loads((folder / "persona.json").read_text())
        result = adherence(backbone, folder, data, n_fit=args.n_fit, max_new_tokens=args.max_new_tokens)
        settings["train"].append(card["train"])  # what this adapter was trained with, also when it was trained earlier
        settings["n_fit"].append(min(args.n_fit, card["n_train"]))
        settings["n_eval"].append(result["n_eval"])
        (folder / "evaluation.json").write_text(json.dumps(result, indent=2))
        p, n = result["persona_perplexity"], result["neutral_perplexity"]
        rows.append(
            {
                "persona": name,
                "train/val": f"{card['n_train']}/{card['n_val']}",
                "val perplexity by epoch": " -> ".join(f"{m['val_perplexity']:.2f}" for m in card["metrics"]),
                "adherence, base": _ci(result["adherence_base"]),
                "adherence, adapter": _ci(result["adherence_adapter"]),
                "classifier acc.": f"{result['judge_heldout_accuracy']:.2f}",
                "persona ppl": f"{p['before']:.1f} -> {p['after']:.1f}",
                "neutral ppl": f"{n['before']:.2f} -> {n['after']:.2f} ({100 * n['change']:+.1f}%)",
            }
        )
        print(rows[-1])
    print(write_section("persona_adapters", "Persona adapters (SmolLM2-135M)", rows, note(settings), data={"settings": settings}))


if __name__ == "__main__":
    main()
