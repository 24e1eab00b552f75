"""Step 5: figures and a self-contained HTML report of a safety run (results.json), plus markdown tables for docs."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import atomic_path, write_text_atomic
from .._markdown import markdown_table
from .._plot import data_uri
from ..judges.text import is_collapsed
from .errors import SafetyError
from .refusal import rate_with_ci

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

GROUPS = ("frozen", "others", "random")


def format_rate(rate: dict) -> str:
    return f"{100 * rate['rate']:.0f}% [{100 * rate['low']:.0f}, {100 * rate['high']:.0f}]"


def format_change(stat: dict) -> str:
    return f"{100 * stat['mean']:+.1f}% [{100 * stat['low']:+.1f}, {100 * stat['high']:+.1f}]"


def collapse_rate(measure: dict) -> dict:
    """Share of degenerate (repetitive) answers: a 'refusal rate' of 0 from a broken model is not compliance.

    From the answers, or the stored rate of a measure kept without them."""
    return measure["collapsed"] if "collapsed" in measure else rate_with_ci([is_collapsed(a) for a in measure["answers"]]).to_dict()


def collapsed(measure: dict) -> str:
    return format_rate(collapse_rate(measure))


def tables(results: dict) -> dict[str, tuple[list[dict[str, Any]], list[str]]]:
    """The report's tables as rows: alignment, prune check, fine-tunes with score dynamics."""
    align = [
        {
            "model": label,
            "refusal (phrases)": format_rate(m["refusal"]["keyword"]),
            "refusal (embedding)": format_rate(m["refusal"]["embedding"]),
            "collapsed": collapsed(m["refusal"]),
            "over-refusal (phrases)": format_rate(m["over_refusal"]["keyword"]),
            "utility ppl": f"{m['utility_perplexity']:.2f}",
            "classifier agreement": f"{100 * m['refusal']['agreement']['agree']:.0f}%",
        }
        for label, m in (("before alignment", results["align"]["before"]), ("after alignment", results["align"]["after"]))
    ]
    prune = [
        {
            "weights zeroed": name.replace("_", " "),
            "count": v["pruned"],
            "refusal (phrases)": format_rate(v["refusal"]["keyword"]),
            "refusal (embedding)": format_rate(v["refusal"]["embedding"]),
            "collapsed": collapsed(v["refusal"]),
            "utility ppl": f"{v['utility_perplexity']:.2f}",
        }
        for name, v in results["prune_check"]["variants"].items()
    ]
    finetunes = []
    for name, f in results["finetunes"].items():
        overall = f["scores"]["overall"]
        finetunes.append(
            {
                "fine-tune": name,
                "refusal after": format_rate(f["refusal"]["keyword"]),
                "collapsed": collapsed(f["refusal"]),
                "over-refusal": format_rate(f["over_refusal"]["keyword"]),
                **{f"{g} score change": format_change(overall[f"{g}_mean"]) for g in GROUPS},
                "frozen median change": format_change(overall["frozen_median"]),
                "verdict": f["scores"]["verdict"].split(":")[0],
            }
        )
    return {
        "Alignment (held-out requests)": (align, list(align[0])),
        "Prune check": (prune, list(prune[0])),
        "Utility fine-tunes and Wanda score dynamics": (finetunes, list(finetunes[0]) if finetunes else []),
    }


def results_markdown(results: dict) -> str:
    """The tables as markdown (for docs/experiments.md)."""
    return "\n\n".join(f"**{title}**\n\n{markdown_table(rows, cols)}" for title, (rows, cols) in tables(results).items() if rows)


def _figure(width: float = 8.0, height: float = 4.2) -> Figure:
    from matplotlib.figure import Figure  # noqa: PLC0415

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _rate_bars(ax: Axes, labels: list[str], rates: list[dict], title: str) -> None:
    values = [100 * r["rate"] for r in rates]
    errors = [[100 * (r["rate"] - r["low"]) for r in rates], [100 * (r["high"] - r["rate"]) for r in rates]]
    ax.bar(range(len(values)), values, yerr=errors, capsize=3, color="C0")
    ax.set_xticks(range(len(values)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("refusal on held-out harmful (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def figures(results: dict, folder: Path) -> dict[str, Path]:
    """refusal.png, histograms.png, per_block.png, score_changes.png in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    fig = _figure(11, 4.2)
    left, middle, right = fig.subplots(1, 3, sharey=True)
    _rate_bars(left, ["before", "after"], [results["align"][k]["refusal"]["keyword"] for k in ("before", "after")], "alignment")
    variants = results["prune_check"]["variants"]
    _rate_bars(middle, [n.replace("_", " ") for n in variants], [v["refusal"]["keyword"] for v in variants.values()], "prune check (weights zeroed)")
    names = list(results["finetunes"])
    _rate_bars(right, names, [results["finetunes"][n]["refusal"]["keyword"] for n in names], "after utility fine-tuning")
    out["refusal"] = _save(fig, folder / "refusal.png")

    shown = [n for n in names if n.endswith("-safety")] or names[:2]
    fig = _figure(11, 3.8)
    for ax, name in zip(fig.subplots(1, max(len(shown), 1), squeeze=False)[0], shown):
        hist = results["finetunes"][name]["scores"]["histograms"]
        centres = [(a + b) / 2 for a, b in zip(hist["bins"][:-1], hist["bins"][1:])]
        for key, style in (("before_frozen", "C3-"), ("after_frozen", "C3--"), ("before_others", "C0-"), ("after_others", "C0--")):
            total = max(sum(hist[key]), 1)
            ax.plot(centres, [c / total for c in hist[key]], style, lw=1.2, label=key.replace("_", " "))
        ax.set_xlabel("log10 Wanda score (safety data)")
        ax.set_ylabel("share of weights")
        ax.set_title(name, fontsize=10)
        ax.legend(fontsize=7)
    out["histograms"] = _save(fig, folder / "histograms.png")

    fig = _figure()
    ax = fig.subplots()
    for name in names:
        blocks = results["finetunes"][name]["scores"]["per_block"]
        ax.plot([int(b) for b in blocks], [100 * v["frozen_mean"] for v in blocks.values()], marker="o", ms=3, lw=1, label=name)
    for level in (-10, -5, 5):
        ax.axhline(level, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("block")
    ax.set_ylabel("frozen weights' mean score change (%)")
    ax.legend(fontsize=7, ncol=3)
    ax.grid(alpha=0.3)
    out["per_block"] = _save(fig, folder / "per_block.png")

    fig = _figure()
    ax = fig.subplots()
    width = 0.8 / len(GROUPS)
    for i, group in enumerate(GROUPS):
        stats = [results["finetunes"][n]["scores"]["overall"][f"{group}_mean"] for n in names]
        ax.bar(
            [x + i * width for x in range(len(names))],
            [100 * s["mean"] for s in stats],
            width,
            yerr=[[100 * (s["mean"] - s["low"]) for s in stats], [100 * (s["high"] - s["mean"]) for s in stats]],
            capsize=2,
            label=group,
        )
    ax.set_xticks([x + width for x in range(len(names))], names, rotation=20, ha="right", fontsize=8)
    ax.axhspan(-5, 5, color="grey", alpha=0.12, label="within 5% (B)")
    ax.axhline(-10, color="C3", lw=0.8, ls=":", label="-10% (A)")
    ax.set_ylabel("mean relative score change (%), 95% CI over blocks")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    out["score_changes"] = _save(fig, folder / "score_changes.png")
    return out


_CAPTIONS = {
    "refusal": "Refusal rate on held-out harmful requests (phrase matcher, Wilson 95% CI).",
    "histograms": "Wanda scores on safety data before (solid) and after (dashed) fine-tuning: frozen (red) vs all other weights (blue).",
    "per_block": "Mean relative change of the frozen weights' scores per block.",
    "score_changes": (
        "Mean relative score change of frozen, non-frozen and random weights per fine-tune (95% CI: Student's t "
        "over the blocks' means, each block's matrices averaged first)."
    ),
}


def _html_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def load_results(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise SafetyError(f"{run_dir} holds no results.json: run `personactl safety run --out {run_dir}` first")
    return json.loads(path.read_text(encoding="utf-8"))


def write_report(run_dir: str | Path) -> Path:
    """figures/*.png and report.html (figures embedded) in the run folder; returns the report path."""
    run = Path(run_dir)
    results = load_results(run)
    paths = figures(results, run / "figures")
    verdicts = "".join(f"<li><b>{html.escape(n)}</b>: {html.escape(f['scores']['verdict'])}</li>" for n, f in results["finetunes"].items())
    sections = "".join(f"<h2>{html.escape(title)}</h2>{_html_table(rows, cols)}" for title, (rows, cols) in tables(results).items() if rows)
    images = "".join(
        f'<figure><img src="{data_uri(p)}" alt="{name}"><figcaption>{html.escape(_CAPTIONS[name])}</figcaption></figure>' for name, p in paths.items()
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Safety-critical neurons: {html.escape(results["model"])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0;font-size:14px}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
th{{background:#f3f3f3}}img{{max-width:100%}}figcaption{{font-size:13px;color:#555}}.note{{background:#fff7e0;padding:8px 12px}}</style></head>
<body><h1>Safety-critical neurons: {html.escape(results["model"])}</h1>
<p class="note">The base model barely refuses, so it was first fine-tuned on team-written refusals and helpful answers ("aligned");
every later step studies that aligned model. Refusal = the phrase matcher; the embedding classifier is the second opinion;
"collapsed" = answers that are mostly repetition (a model broken by pruning refuses nothing without complying either).
Masks: top {100 * results["identify"]["settings"]["sparsity"]:.1f}% by safety Wanda score minus top
{100 * results["identify"]["settings"]["utility_sparsity"]:.1f}% by utility score, per matrix ({results["identify"]["masked"]} weights,
{100 * results["identify"]["fraction"]:.2f}% of the block linear weights).</p>
<h2>Verdicts (Hypothesis A: frozen scores drop &gt; 10%; B: within 5%)</h2><ul>{verdicts}</ul>
{sections}{images}</body></html>"""
    return write_text_atomic(run / "report.html", page)
