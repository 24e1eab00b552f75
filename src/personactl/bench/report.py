"""What a bench writes for people: the leaderboard (JSON and Markdown), a trait-vs-coherence figure and one
self-contained HTML page, all from the scored records, so they are rebuilt the same way after a resume."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._io import atomic_path, write_text_atomic
from .._markdown import markdown_table
from .._plot import data_uri
from .leaderboard import Comparison, MethodRow, OverallRow, format_estimate, method_rows, overall_rows, paired_comparisons, verdict_lines
from .run import BenchResult, TraitBench

LEADERBOARD_JSON, LEADERBOARD_MD, FIGURE, PAGE = "leaderboard.json", "leaderboard.md", "trait_vs_coherence.png", "bench.html"
BENCH_COLUMNS = ("method", "strength", "trait", "coherence", "relevance", "combined [95% CI]", "+prompt tokens", "speed", "set-up s")


@dataclass
class BenchReport:
    """A bench's leaderboard, its verdict lines and the files written."""

    result: BenchResult
    rows: list[MethodRow]
    overall: list[OverallRow]
    comparisons: list[Comparison]
    verdicts: list[str]
    paths: list[Path]

    def table(self, trait: str) -> list[dict[str, str]]:
        """One trait's leaderboard as text cells (BENCH_COLUMNS), best combined score first."""
        bench = next(t for t in self.result.traits if t.trait == trait)
        return [_cells(row, bench) for row in self.rows if row.trait == trait]


def write_bench_report(result: BenchResult) -> BenchReport:
    """Write leaderboard.json, leaderboard.md, the figure and bench.html into the bench folder."""
    records = result.records
    if records:
        rows, comparisons = method_rows(records), paired_comparisons(records)
        report = BenchReport(result, rows, overall_rows(rows), comparisons, verdict_lines(rows, comparisons), [])
    else:
        report = BenchReport(result, [], [], [], ["no trait was benched: every one was skipped (see the skipped list)"], [])
    out = result.out_dir
    write_text_atomic(out / LEADERBOARD_JSON, json.dumps(_leaderboard(report), indent=2))
    write_text_atomic(out / LEADERBOARD_MD, bench_markdown(report))
    figure = _figure(report.rows, out / FIGURE)
    report.paths = [out / LEADERBOARD_JSON, out / LEADERBOARD_MD, *([figure] if figure else []), _page(report, figure, out / PAGE)]
    return report


def _cells(row: MethodRow, bench: TraitBench) -> dict[str, str]:
    cost = bench.costs.get(row.method, {})
    choice = bench.choices.get(row.method)
    speed = cost.get("relative_speed")
    strength = "" if choice is None else f"{choice.coef:g}" + ("" if choice.meets_floor else " (below floor)")
    return {
        "method": row.method,
        "strength": strength,
        "trait": format_estimate(row.trait_score),
        "coherence": format_estimate(row.coherence),
        "relevance": format_estimate(row.relevance),
        "combined [95% CI]": format_estimate(row.combined),
        "+prompt tokens": f"{cost.get('extra_prompt_tokens') or 0:.0f}",
        "speed": "" if speed is None else f"{speed:.2f}x",
        "set-up s": f"{cost.get('setup_s') or 0:.0f}",
    }


def _leaderboard(report: BenchReport) -> dict[str, Any]:
    result = report.result
    return {
        "config": result.config.model_dump(),
        "traits": {
            t.trait: {
                "status": t.status,
                "reason": t.reason,
                "expressibility": t.expressibility.to_dict() if t.expressibility else None,
                "choices": {label: c.to_dict() for label, c in t.choices.items()},
                "costs": t.costs,
                "left_out": t.left_out,
            }
            for t in result.traits
        },
        "rows": [{k: v for k, v in asdict(row).items() if k != "per_question"} for row in report.rows],
        "overall": [asdict(row) for row in report.overall],
        "comparisons": [{**asdict(c), "supported": c.supported} for c in report.comparisons],
        "verdicts": report.verdicts,
    }


def bench_markdown(report: BenchReport, heading: str = "##") -> str:
    """The leaderboard of every benched trait, the overall ranking, the verdicts and the skipped traits, in Markdown."""
    result = report.result
    parts = []
    for t in result.traits:
        if t.status != "benched":
            continue
        parts.append(f"{heading} {t.trait}\n\n{markdown_table(report.table(t.trait), BENCH_COLUMNS)}")
        if t.expressibility is not None:
            parts.append(t.expressibility.line())
        parts.extend(f"- {label}: left out: {why}" for label, why in t.left_out.items())
    if report.overall:
        overall = [{"method": r.method, "traits": ", ".join(r.traits), "combined [95% CI]": format_estimate(r.combined)} for r in report.overall]
        parts.append(
            f"{heading} Overall (mean over traits of each trait's combined score)\n\n"
            + markdown_table(overall, ("method", "traits", "combined [95% CI]"))
        )
    parts.append(f"{heading} What the data support\n\n" + "\n".join(f"- {line}" for line in report.verdicts))
    skipped = [t for t in result.traits if t.status == "skipped"]
    if skipped:
        parts.append(f"{heading} Skipped traits\n\n" + "\n".join(f"- {t.reason}" for t in skipped))
    return "\n\n".join(parts) + "\n"


def _figure(rows: list[MethodRow], path: Path) -> Path | None:
    """Mean trait against mean coherence per method (95% CIs as bars), one panel per benched trait."""
    traits = list(dict.fromkeys(r.trait for r in rows))
    if not traits:
        return None
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(4.2 * len(traits), 4), layout="constrained")
    axes = fig.subplots(1, len(traits), squeeze=False)[0]
    methods = list(dict.fromkeys(r.method for r in rows))
    for ax, trait in zip(axes, traits):
        for row in (r for r in rows if r.trait == trait):
            (x, x_lo, x_hi), (y, y_lo, y_hi) = row.coherence, row.trait_score
            color = f"C{methods.index(row.method) % 10}"
            ax.errorbar(x, y, xerr=[[_gap(x - x_lo)], [_gap(x_hi - x)]], yerr=[[_gap(y - y_lo)], [_gap(y_hi - y)]], fmt="o", color=color, capsize=2)
            ax.annotate(row.method, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8, color=color)
        ax.set(title=trait, xlabel="coherence (0-100)", ylabel="trait (0-100)", xlim=(0, 102), ylim=(0, 102))
        ax.grid(alpha=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _gap(value: float) -> float:
    return value if value == value else 0.0  # no interval (one question): no bar


def _page(report: BenchReport, figure: Path | None, path: Path) -> Path:
    from jinja2 import Environment, PackageLoader  # noqa: PLC0415

    env = Environment(loader=PackageLoader("personactl", "templates"), autoescape=True)
    result = report.result
    html = env.get_template("bench.html.j2").render(
        config=result.config,
        traits=[(t, report.table(t.trait) if t.status == "benched" else []) for t in result.traits],
        columns=BENCH_COLUMNS,
        overall=report.overall,
        estimate=format_estimate,
        verdicts=report.verdicts,
        figure=data_uri(figure) if figure else None,
    )
    return write_text_atomic(path, html)
