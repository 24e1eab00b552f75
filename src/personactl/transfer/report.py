"""The transfer report: one markdown page per persona (results table, success criteria next to the
measured numbers, the three diagnostics, the ridge CV table) plus a CSV and a figure."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import atomic_path, write_text_atomic
from .._markdown import markdown_table
from .mapping import lambda_note
from .paired import picked_on

if TYPE_CHECKING:
    from .config import TransferConfig
    from .result import TransferResult
    from .ridge import RidgeMap

COLUMNS = ("group", "method", "layer", "coef", "applied_norm", "trait", "trait_lo", "trait_hi", "coherence", "collapse_rate", "n")


def plot_methods(path: Path, rows: list[dict[str, Any]], title: str) -> Path:
    """Trait and coherence against alpha, one line per method (main grid)."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(8.5, 5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    base = next(r for r in rows if r["group"] == "main" and r["method"] == "unsteered")
    for method in dict.fromkeys(r["method"] for r in rows if r["group"] == "main" and r["method"] != "unsteered"):
        mine = sorted((r for r in rows if r["group"] == "main" and r["method"] == method), key=lambda r: r["coef"])
        xs = [r["coef"] for r in mine]
        top.plot(xs, [r["trait"] for r in mine], marker="o", ms=3, label=method)
        bottom.plot(xs, [r["coherence"] for r in mine], marker="o", ms=3, label=method)
    for ax, key, label in ((top, "trait", "trait (0-100)"), (bottom, "coherence", "coherence (0-100)")):
        ax.axhline(base[key], color="grey", ls=":", lw=1, label="unsteered")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    top.legend(fontsize=7, ncol=4)
    top.set_title(title)
    bottom.set_xlabel("alpha (coefficient on each method's vector)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def write_report(out: Path, config: TransferConfig, result: TransferResult, ridge: RidgeMap, n_pairs: int) -> Path:
    """report_<trait>.md (+ results_<trait>.csv and a figure) in `out`; returns the report path."""
    name = result.trait
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*COLUMNS, "example"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result.rows)
    write_text_atomic(out / f"results_{name}.csv", buffer.getvalue())
    figure = plot_methods(out / f"methods_{name}.png", result.rows, f"{name}: {config.source_model} -> {config.target_model}")
    cv = [{"lambda": lam, **scores, "chosen": "yes" if lam == ridge.lam else ""} for lam, scores in ridge.scores.items()]
    cv_columns = ["lambda", *dict.fromkeys(k for s in ridge.scores.values() for k in s), "chosen"]
    main = [r for r in result.rows if r["group"] == "main"]
    note = f"\n**Note**: {lambda_note(ridge.lam, list(ridge.scores))}\n" if lambda_note(ridge.lam, list(ridge.scores)) else ""
    text = f"""# Transfer of '{name}': {config.source_model} -> {config.target_model}

Source layer {result.source_layer} -> target layer {result.target_layer}; {n_pairs} paired activations
(reduction `{config.reduction}`); judge `{config.judge_spec}`; {main[0]["n"]} test prompts per condition.

## Success criteria (ridge's alpha picked on one half of the questions, scored on the other)

{markdown_table(result.criteria, ["criterion", "said", "alpha", "verdict"])}

Alpha picked per half: {result.criteria[0]["alpha"]} (picked on questions {picked_on(result.criteria[0]["picks"])}).

## Every method (alpha x each method's own vector)

![methods]({figure.name})

{markdown_table(main, COLUMNS)}

## Diagnostics

- **A, magnitude**: {result.hypotheses["a"]["conclusion"]}
- **B, basis**: {result.hypotheses["b"]["conclusion"]}
- **C, layer**: {result.hypotheses["c"]["conclusion"]}

{markdown_table([r for r in result.rows if r["group"] != "main"], COLUMNS)}

## Ridge map (leave-one-out over the lambda grid; held-out R^2 and cosine)

{markdown_table(cv, cv_columns)}
{note}"""
    return write_text_atomic(out / f"report_{name}.md", text)
