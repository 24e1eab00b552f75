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
from personactl.lora.config import LoRATrainConfig

PERSONAS = ("pirate_coder", "formal_butler")


def _ci(values: list[float]) -> str:
    return f"{values[0]:.1f} [{values[1]:.1f}, {values[2]:.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry", type=Path, default=Path("runs/adapters"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args()

    backbone = load_model("smollm2-135m")
    rows = []
    for name in PERSONAS:
        data = files("personactl") / "data" / "personas" / f"{name}.jsonl"
        folder = args.registry / name
        if not (folder / "persona.json").is_file():
            config = LoRATrainConfig(**{**vars(adapter_defaults(backbone)), "epochs": args.epochs, "learning_rate": args.lr})
            train_adapter(backbone, data, name, folder, config)
        card = json.loads((folder / "persona.json").read_text())
        result = adherence(backbone, folder, data)
        (folder / "evaluation.json").write_text(json.dumps(result, indent=2))
        p, n = result["persona_perplexity"], result["neutral_perplexity"]
        rows.append({
            "persona": name, "train/val": f"{card['n_train']}/{card['n_val']}",
            "val perplexity by epoch": " -> ".join(f"{m['val_perplexity']:.2f}" for m in card["metrics"]),
            "adherence, base": _ci(result["adherence_base"]), "adherence, adapter": _ci(result["adherence_adapter"]),
            "classifier acc.": f"{result['judge_heldout_accuracy']:.2f}",
            "persona ppl": f"{p['before']:.1f} -> {p['after']:.1f}",
            "neutral ppl": f"{n['before']:.2f} -> {n['after']:.2f} ({100 * n['change']:+.1f}%)",
        })
        print(rows[-1])
    note = ("Adapters: rank 16, alpha 32, dropout 0.05, q/k/v/o, 2 epochs at lr 5e-4, batch 8. Adherence (0-100): the embedding "
            "classifier fitted on 48 persona answers vs the base model's answers to the same instructions, scored on the 16 held-out "
            "instructions (greedy, 48 tokens); brackets: bootstrap 95% CIs; chance is 50 on a balanced set. Neutral perplexity: the "
            "30 team-written answers of data/neutral_qa.jsonl.")
    print(write_section("persona_adapters", "Persona adapters (SmolLM2-135M)", rows, note))


if __name__ == "__main__":
    main()
