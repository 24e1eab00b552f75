"""Adaptive multi-layer steering: the top-3 measured layers blended (`auto:3`) vs the single best layer (`auto`).

For pirate and silly on SmolLM2, one sweep each with layers ["auto", "auto:3"]
and the demo's settings (12 extraction questions, offline judge, temperature
0.7, 2 samples), so both layer specs answer the same questions with the same
sampling seeds (common random numbers). Per (layer spec, coefficient): trait
and coherence with 95% CIs over questions (samples averaged first), and the paired difference blend - single
(same question, same sample, same seed) with its CI. Writes runs/adaptive-<trait>/
and a section of docs/experiments.md.

A blend's coefficient is split across its layers in proportion to their
measured effects, the weights summing to 1 (see layer_selection.layer_weights).

Run: OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python experiments/adaptive_layers.py
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from _doc import write_section

from personactl import load_model
from personactl.evaluate import SCORE_RANGE, SweepConfig
from personactl.experiment import run
from personactl.intervals import mean_ci

TRAITS = ("pirate", "silly")
COEFS = [0.0, 1.0, 2.0, 3.0]
SPECS = ["auto", "auto:3"]
REUSED = ("vector.safetensors", "vector.pairs.jsonl", "judge.json", "layers.json", "projections.json")
SAME_AS_DEMO = ("model", "trait", "vector", "extraction_questions", "judge", "max_new_tokens", "temperature", "seed", "positions")


def config(trait: str, out: Path) -> SweepConfig:
    return SweepConfig(
        name=f"adaptive-{trait}",
        trait=trait,
        methods=["vector"],
        layers=list(SPECS),
        coefs=COEFS,
        samples=2,
        temperature=0.7,
        judge="embed",
        extraction_questions=12,
    )


def reuse_demo(cfg: SweepConfig, out: Path) -> str:
    """Copy the demo run's vector, answers and layer measurement when its settings are the same (saves the extraction)."""
    demo, target = out / f"demo-{cfg.trait}", out / cfg.name
    try:
        demo_cfg = json.loads((demo / "config.json").read_text())["sweep"]
    except (OSError, KeyError, json.JSONDecodeError):
        return ""
    if any(demo_cfg.get(k) != getattr(cfg, k) for k in SAME_AS_DEMO) or not all((demo / f).exists() for f in REUSED):
        return ""
    target.mkdir(parents=True, exist_ok=True)
    if (target / "layers.json").exists():
        return f"vector and layer measurement from {demo}"
    for name in REUSED:
        shutil.copy2(demo / name, target / name)
    return f"vector and layer measurement from {demo}"


def by_spec(records: list[dict], selection) -> dict[str, dict[tuple[float, int, int], dict]]:
    """records per layer spec ('auto' is the chosen layer), keyed by (coef, question, sample)."""
    out: dict[str, dict] = {spec: {} for spec in SPECS}
    for r in records:
        spec = "auto" if r["layer"] == selection.chosen else str(r["layer"])
        out[spec][(r["coef"], r["question_id"], r["sample"])] = r
    return out


def compare(records: list[dict], selection) -> list[dict]:
    """Per coefficient and spec: trait and coherence (mean, CI) and the paired blend - single differences."""
    cells = by_spec(records, selection)
    rows = []
    for coef in COEFS:
        keys = sorted(k for k in cells["auto"] if k[0] == coef and k in cells["auto:3"])
        for spec in SPECS:
            recs = [cells[spec][k] for k in keys]
            questions = [k[1] for k in keys]
            t = mean_ci([r["trait"] for r in recs], questions, bounds=SCORE_RANGE)
            c = mean_ci([r["coherence"] for r in recs], questions, bounds=SCORE_RANGE)
            row = {
                "spec": spec,
                "coef": coef,
                "n": len(recs),
                "trait": t[0],
                "trait_lo": t[1],
                "trait_hi": t[2],
                "coherence": c[0],
                "coherence_lo": c[1],
                "coherence_hi": c[2],
            }
            if spec != "auto":
                for metric in ("trait", "coherence"):
                    paired = [k for k in keys if cells[spec][k][metric] is not None and cells["auto"][k][metric] is not None]
                    d = mean_ci([cells[spec][k][metric] - cells["auto"][k][metric] for k in paired], [k[1] for k in paired])
                    row.update({f"d_{metric}": d[0], f"d_{metric}_lo": d[1], f"d_{metric}_hi": d[2]})
            rows.append(row)
    return rows


def side(a: dict, b: dict, metric: str) -> int:
    """+1 when a's CI lies above b's, -1 when below, 0 when they overlap."""
    return 1 if a[f"{metric}_lo"] > b[f"{metric}_hi"] else -1 if a[f"{metric}_hi"] < b[f"{metric}_lo"] else 0


def paired_side(row: dict, metric: str) -> int:
    """+1 when the paired difference blend - single is above 0 beyond its CI, -1 below, 0 when the CI holds 0."""
    return 1 if row[f"d_{metric}_lo"] > 0 else -1 if row[f"d_{metric}_hi"] < 0 else 0


def winner(trait_sides: list[int], coherence_sides: list[int]) -> str:
    """The blend wins when it is higher in trait somewhere, lower nowhere, and never less coherent; and vice versa."""
    if any(x > 0 for x in trait_sides) and not any(x < 0 for x in trait_sides) and not any(x < 0 for x in coherence_sides):
        return "the blend wins"
    if any(x < 0 for x in trait_sides) and not any(x > 0 for x in trait_sides) and not any(x > 0 for x in coherence_sides):
        return "the single best layer wins"
    return "undecided"


def verdict(rows: list[dict]) -> str:
    """Which wins for one trait on the steered coefficients (> 0): by non-overlapping 95% CIs (the criterion),
    and by the paired differences (the same questions and seeds on both sides) as supporting evidence."""
    pairs = [(r, next(s for s in rows if s["spec"] == "auto" and s["coef"] == r["coef"])) for r in rows if r["spec"] == "auto:3" and r["coef"] > 0]
    words = {1: "higher", -1: "lower", 0: "undecided"}
    said = [f"coef {b['coef']:g}: trait {words[side(b, s, 'trait')]}, coherence {words[side(b, s, 'coherence')]}" for b, s in pairs]
    paired = [f"coef {b['coef']:g}: d trait {words[paired_side(b, 'trait')]}, d coherence {words[paired_side(b, 'coherence')]}" for b, _ in pairs]
    by_ci = winner([side(b, s, "trait") for b, s in pairs], [side(b, s, "coherence") for b, s in pairs])
    by_pairs = winner([paired_side(b, "trait") for b, _ in pairs], [paired_side(b, "coherence") for b, _ in pairs])
    return f"{by_ci} by non-overlapping 95% CIs ({'; '.join(said)}); paired differences: {by_pairs} ({'; '.join(paired)})"


def note(data: dict) -> str:
    s = data["settings"]
    parts = [
        f"SmolLM2, method vector, {s['samples']} samples at temperature {s['temperature']:g}, {s['max_new_tokens']} tokens, "
        f"offline embed judge, {s['extraction_questions']} extraction questions; both layer specs answer the same questions "
        "with the same sampling seeds. auto = the single layer with the largest measured effect; auto:3 = the top 3 "
        "coherent layers with a positive effect, coefficient c adds c * w_l * v[l] at each, w proportional to the measured "
        "effect and summing to 1 (c pos-neg gaps in total). d = paired difference auto:3 - auto over the same "
        "(question, sample), averaged per question; brackets: 95% CIs over questions (t on per-question means)."
    ]
    said = []
    for trait, t in data["traits"].items():
        weights = ", ".join(f"L{layer} {w:.2f}" for layer, w in t["weights"].items())
        said.append(verdict([r for r in data["rows"] if r["persona"] == trait]))
        parts.append(
            f"{trait}: auto = layer {t['chosen']}; auto:3 = {weights}{' (' + t['blend_note'] + ')' if t['blend_note'] else ''}"
            f"{'; ' + t['reused'] + ' (the same settings)' if t.get('reused') else ''}; {said[-1]}."
        )
    blend_wins = all(v.startswith("the blend wins") for v in said)
    parts.append(
        f"Default kept: `--layers {'auto:3' if blend_wins else 'auto'}` "
        + (
            "(the blend wins for every trait)."
            if blend_wins
            else "(the blend does not win beyond the CIs for every trait; a blend stays available as auto:K)."
        )
    )
    return "\n\n".join(parts)


def table(rows: list[dict]) -> list[dict]:
    def ci(r: dict, m: str) -> str:
        return f"{r[m]:.1f} [{r[m + '_lo']:.1f}, {r[m + '_hi']:.1f}]"

    return [
        {
            "trait": r["persona"],
            "layers": r["spec"],
            "coef": f"{r['coef']:g}",
            "n": r["n"],
            "trait score": ci(r, "trait"),
            "coherence": ci(r, "coherence"),
            "d trait": ci(r, "d_trait") if "d_trait" in r else "",
            "d coherence": ci(r, "d_coherence") if "d_coherence" in r else "",
        }
        for r in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs"))
    parser.add_argument("--traits", default=",".join(TRAITS))
    args = parser.parse_args()
    backbone = load_model("smollm2-135m")
    rows, traits, sources = [], {}, {}
    for trait in args.traits.split(","):
        cfg = config(trait, args.out)
        sources[trait] = reuse_demo(cfg, args.out)
        result = run(cfg, args.out, backbone=backbone)
        assert result.selection is not None
        blend = result.selection.blends["auto:3"]
        traits[trait] = {
            "chosen": result.selection.chosen,
            "weights": {str(k): v for k, v in blend.weights.items()},
            "blend_note": blend.note,
            "reused": sources[trait],
            "run": str(result.run_dir),
        }
        rows += [{"persona": trait, **r} for r in compare(result.records, result.selection)]
        print(trait, verdict([r for r in rows if r["persona"] == trait]), flush=True)
    settings = {k: getattr(cfg, k) for k in ("samples", "temperature", "max_new_tokens", "extraction_questions", "coefs", "layers")}
    data = {"settings": settings, "traits": traits, "raw": rows}
    write_section(
        "adaptive_layers", "Adaptive multi-layer steering: top-3 blend vs the single best layer", table(rows), note({**data, "rows": rows}), data=data
    )


if __name__ == "__main__":
    main()
