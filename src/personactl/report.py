"""Figures and one self-contained HTML report for a sweep run folder.

A run folder `runs/<name>/` holds `config.json`, `results.jsonl` (one judged
answer per line), `summary.csv` (means with 95% CIs over questions per method,
layer and coefficient) and, optionally, `layers.json` (per-layer scores and
the chosen layer) and `projections.json` (pos/neg extraction answers projected
onto the vector). `write_report` draws the figures into `figures/` and writes
`report.html`: one file with the figures inlined as base64 PNGs and no
external CSS, JS or fonts, so it can be mailed, archived or opened offline.
Its layout is the jinja2 template `templates/report.html.j2` (autoescaped, so
answers and config values cannot inject markup); this module computes the values.

Figures are drawn on `matplotlib.figure.Figure` objects with the Agg canvas:
no pyplot state, no global backend switch, nothing left open.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._io import atomic_path, write_text_atomic
from ._plot import data_uri
from .errors import PersonactlError

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

SUMMARY_FIELDS = (
    "method",
    "layer",
    "coef",
    "n",
    "trait_mean",
    "trait_lo",
    "trait_hi",
    "trait_scored",
    "coherence_mean",
    "coherence_lo",
    "coherence_hi",
    "coherence_scored",
    "collapse_rate",
    "collapse_lo",
    "collapse_hi",
    "perplexity_mean",
)
FIGURE_NAMES = ("trait_vs_coef", "coherence_vs_coef", "layers", "projections")
EXAMPLE_QUESTIONS = 2  # questions shown per (method, layer) in the examples section
MAX_ANSWER_CHARS = 1500


class ReportError(PersonactlError):
    """A run folder that cannot be reported on (missing or malformed files)."""


@dataclass
class RunData:
    """Everything read from one run folder; optional parts are None when absent."""

    run_dir: Path
    config: dict[str, Any]
    results: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    summary_from_results: bool = False  # True when summary.csv was absent
    layers: dict[str, Any] | None = None
    projections: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def config_name(self, key: str) -> str:
        """`key` at the top of config.json, else in its `sweep` or `vector` section (as experiment.py writes it)."""
        for section in (self.config, self.config.get("sweep"), self.config.get("vector")):
            if isinstance(section, dict) and _name_of(section.get(key)):
                return _name_of(section.get(key))
        return ""

    @property
    def title(self) -> str:
        trait, model = self.config_name("trait"), self.config_name("model")
        if trait and model:
            return f"{trait} on {model}"
        return trait or model or self.run_dir.name


# ---------------------------------------------------------------- loading


def _name_of(value: Any) -> str:
    """A display name for a config entry that is a string or a mapping with a name."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("name", "id", "path"):
            if isinstance(value.get(key), str):
                return value[key]
    return ""


def _float(value: Any) -> float | None:
    """A finite float or None (empty strings, 'nan', 'None', null)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if value == "" or value.lower() in ("nan", "none", "null", "na"):
            return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _int(value: Any) -> int | None:
    number = _float(value)
    return None if number is None else int(number)


def _layer(value: Any) -> int | str | None:
    """A record's layer: an index, a blend's label ("auto:3"), or None (methods without layers)."""
    number = _int(value)
    if number is not None:
        return number
    text = "" if value is None else str(value).strip()
    return text if text and text.lower() not in ("nan", "none", "null", "na") else None


def _layer_key(layer: int | str | None) -> tuple[int, float, str]:
    """Sort key: no layer, then layer indices, then blend labels (auto:2 before auto:10)."""
    if layer is None:
        return (0, 0.0, "")
    if isinstance(layer, int):
        return (1, float(layer), "")
    k = _float(layer.rpartition(":")[2])
    return (2, -1.0 if k is None else k, layer)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"cannot read {what} {path}: {str(exc).splitlines()[0]}") from exc


def _read_results(path: Path, run_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    if not path.is_file():
        raise ReportError(
            f"no results.jsonl in {run_dir}: run the sweep into this folder first "
            f"(`personactl sweep`, or personactl.experiment.run), then make the report"
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    records, notes = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):  # last line without newline: a sweep still writing
                notes.append(f"results.jsonl line {number} is incomplete (sweep still running?) and was skipped")
                continue
            raise ReportError(f"{path} line {number} is not valid JSON ({exc.msg}): fix or delete that line and re-run the sweep") from exc
        if not isinstance(record, dict) or "method" not in record or "coef" not in record:
            raise ReportError(f"{path} line {number} is not a sweep record (needs at least 'method' and 'coef')")
        record["layer"] = _layer(record.get("layer"))
        record["coef"] = _float(record.get("coef"))
        records.append(record)
    if not records:
        raise ReportError(f"{path} holds no records yet: let the sweep finish (or resume it), then make the report")
    return records, notes


def _read_summary(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc
    out = []
    for row in rows:
        item: dict[str, Any] = {name: _float(row.get(name)) for name in SUMMARY_FIELDS}
        item["method"] = (row.get("method") or "").strip() or "?"
        item["layer"] = _layer(row.get("layer"))
        item["n"] = _int(row.get("n"))
        out.append(item)
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Means per (method, layer, coef) without confidence intervals (the fallback for a missing summary.csv)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in results:
        groups[(record["method"], record["layer"], record["coef"])].append(record)
    rows = []
    for (method, layer, coef), records in groups.items():
        row: dict[str, Any] = {name: None for name in SUMMARY_FIELDS}
        values = {k: [v for r in records if (v := _float(r.get(k))) is not None] for k in ("trait", "coherence", "perplexity")}
        row.update(
            method=method,
            layer=layer,
            coef=coef,
            n=len(records),
            trait_mean=_mean(values["trait"]),
            coherence_mean=_mean(values["coherence"]),
            perplexity_mean=_mean(values["perplexity"]),
            collapse_rate=_mean([float(bool(r.get("collapsed"))) for r in records]),
        )
        rows.append(row)
    return rows


def _sort_key(row: dict[str, Any]) -> tuple:
    layer, coef = row.get("layer"), row.get("coef")
    return (str(row.get("method")), _layer_key(layer), -math.inf if coef is None else coef)


def load_run(run_dir: str | Path) -> RunData:
    """Read a run folder; results.jsonl is required, everything else optional."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportError(f"run folder {run_dir} does not exist: run a sweep with `--out {run_dir}` first")
    results, notes = _read_results(run_dir / "results.jsonl", run_dir)

    config: dict[str, Any] = {}
    if (run_dir / "config.json").is_file():
        loaded = _read_json(run_dir / "config.json", "run config")
        config = loaded if isinstance(loaded, dict) else {"config": loaded}
    else:
        notes.append("config.json not found")

    summary_path = run_dir / "summary.csv"
    from_results = not summary_path.is_file()
    if from_results:
        summary = summarize_results(results)
        notes.append("summary.csv not found: means computed from results.jsonl, without confidence intervals")
    else:
        summary = _read_summary(summary_path)
    summary.sort(key=_sort_key)

    layers = None
    if (run_dir / "layers.json").is_file():
        layers = _read_json(run_dir / "layers.json", "layer scores")
        if not isinstance(layers, dict) or not isinstance(layers.get("rows", []), list):
            raise ReportError(f"{run_dir / 'layers.json'} must be an object with a 'rows' list")
        layers.setdefault("rows", [])
        by_layer = [(layer, r) for r in layers["rows"] if isinstance(r, dict) and (layer := _int(r.get("layer"))) is not None]
        layers["rows"] = [r for _, r in sorted(by_layer, key=lambda pair: pair[0])]

    projections = None
    if (run_dir / "projections.json").is_file():
        projections = _read_json(run_dir / "projections.json", "projections")
        if not isinstance(projections, dict):
            raise ReportError(f"{run_dir / 'projections.json'} must be an object with 'pos' and 'neg' lists")
        for key in ("pos", "neg"):
            projections[key] = [v for v in (_float(x) for x in projections.get(key) or []) if v is not None]

    return RunData(run_dir, config, results, summary, from_results, layers, projections, notes)


# ---------------------------------------------------------------- figures


# Fonts sized for a figure shown about 600 px wide (two per row in the report).
_STYLE: dict[RcKeyType, Any] = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
}


def _new_figure(width: float = 7.2, height: float = 4.4) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    fig.clear()
    return path


def _series_label(method: str, layer: int | str | None) -> str:
    if isinstance(layer, str):
        return f"{method} · layers {layer}"
    return method if layer is None or layer < 0 else f"{method} · layer {layer}"


def _series(summary: list[dict[str, Any]]) -> dict[tuple[str, int | None], list[dict[str, Any]]]:
    series: dict[tuple[str, int | None], list[dict[str, Any]]] = defaultdict(list)
    for row in summary:
        if row.get("coef") is not None:
            series[(row["method"], row["layer"])].append(row)
    for rows in series.values():
        rows.sort(key=lambda r: r["coef"])
    return dict(sorted(series.items(), key=lambda kv: (kv[0][0], _layer_key(kv[0][1]))))


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _score_vs_coef(run: RunData, metric: str, title: str, ylabel: str, path: Path) -> Path:
    fig = _new_figure()
    ax = fig.add_subplot()
    styles = ["-", "--", "-.", ":"]
    series = _series(run.summary)
    methods = sorted({m for m, _ in series})
    for index, ((method, layer), rows) in enumerate(series.items()):
        xs = [r["coef"] for r in rows]
        ys = [_nan(r.get(f"{metric}_mean")) for r in rows]
        lo = [_nan(r.get(f"{metric}_lo")) for r in rows]
        hi = [_nan(r.get(f"{metric}_hi")) for r in rows]
        color = f"C{index % 10}"
        ax.plot(
            xs,
            ys,
            marker="o",
            ms=4,
            lw=1.8,
            color=color,
            clip_on=False,
            ls=styles[methods.index(method) % len(styles)],
            label=_series_label(method, layer),
        )
        if any(not math.isnan(a) and not math.isnan(b) for a, b in zip(lo, hi)):
            ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)
    ax.set_ylim(0, 100)
    ax.set_xlabel("steering coefficient")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\n{run.title}")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", title="method · layer (band: 95% CI)")
    return _save(fig, path)


def _layers_figure(run: RunData, path: Path) -> Path:
    rows = run.layers["rows"] if run.layers else []
    chosen = _int(run.layers.get("chosen")) if run.layers else None
    panels = [("auroc", "AUROC"), ("cohens_d", "Cohen's d"), ("effect", "measured effect")]
    if any(_float(r.get("coherence")) is not None for r in rows):
        panels.append(("coherence", "coherence"))
    fig = _new_figure(7.2, 1.7 * len(panels) + 0.7)
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    xs = [_int(r["layer"]) for r in rows]
    for ax, (key, label) in zip(axes, panels):
        ys = [_nan(_float(r.get(key))) for r in rows]
        ax.plot(xs, ys, marker="o", ms=3.5, lw=1.5, color="C0")
        if key == "auroc":
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        elif key in ("cohens_d", "effect"):
            ax.axhline(0.0, color="grey", lw=0.8, ls=":")
        if chosen is not None:
            ax.axvline(chosen, color="C3", lw=1.5, ls="--", label=f"chosen layer {chosen}")
            if chosen in xs and not math.isnan(ys[xs.index(chosen)]):
                ax.plot([chosen], [ys[xs.index(chosen)]], marker="*", ms=12, color="C3")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    if chosen is not None:
        axes[0].legend(loc="best")
    axes[0].set_title(f"Per-layer scores\n{run.title}")
    axes[-1].set_xlabel("layer (hidden_states index)")
    return _save(fig, path)


def _projections_figure(projections: dict[str, Any], path: Path) -> Path:
    import numpy as np

    pos, neg = projections["pos"], projections["neg"]
    both = np.asarray(pos + neg, dtype=float)
    fig = _new_figure(7.2, 4.4)
    ax = fig.add_subplot()
    if both.size:
        bins = np.histogram_bin_edges(both, bins=min(40, max(8, int(math.sqrt(both.size)) * 2))).tolist()
        for values, label, color in ((pos, "positive instruction", "C3"), (neg, "negative instruction", "C0")):
            if values:
                ax.hist(values, bins=bins, alpha=0.5, color=color, label=f"{label} (n={len(values)})")
                ax.axvline(float(np.mean(values)), color=color, lw=1.5, ls="--")
        ax.legend()
    layer = _int(projections.get("layer"))
    ax.set_title("Extraction answers projected onto the vector" + (f" (layer {layer})" if layer is not None else ""))
    ax.set_xlabel("projection")
    ax.set_ylabel("answers")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _make_figures(run: RunData) -> dict[str, Path]:
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        return _draw_all(run)


def _draw_all(run: RunData) -> dict[str, Path]:
    out_dir = run.run_dir / "figures"
    figures = {
        "trait_vs_coef": _score_vs_coef(run, "trait", "Trait score vs steering coefficient", "trait score (0-100)", out_dir / "trait_vs_coef.png"),
        "coherence_vs_coef": _score_vs_coef(
            run, "coherence", "Coherence vs steering coefficient", "coherence (0-100)", out_dir / "coherence_vs_coef.png"
        ),
    }
    if run.layers and run.layers["rows"]:
        figures["layers"] = _layers_figure(run, out_dir / "layers.png")
    if run.projections and (run.projections["pos"] or run.projections["neg"]):
        figures["projections"] = _projections_figure(run.projections, out_dir / "projections.png")
    return figures


def plot_layer_scores(run_dir: str | Path) -> Path:
    """figures/layers.png from a folder's layers.json alone (for `personactl layers`)."""
    import matplotlib

    run_dir = Path(run_dir)
    run = RunData(run_dir, {}, [], [], layers=_read_json(run_dir / "layers.json", "layer scores"))
    with matplotlib.rc_context(_STYLE):
        return _layers_figure(run, run_dir / "figures" / "layers.png")


def make_figures(run_dir: str | Path) -> dict[str, Path]:
    """Write figures/*.png for a run folder; returns {name: path} for those drawn.

    Always `trait_vs_coef` and `coherence_vs_coef`; `layers` when layers.json
    exists, `projections` when projections.json exists.
    """
    return _make_figures(load_run(run_dir))


# ---------------------------------------------------------------- HTML


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _fmt_coef(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def _ci(lo: float | None, hi: float | None, scale: float = 1.0, digits: int = 1) -> str:
    if lo is None or hi is None:
        return ""
    return f"[{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"


def score_cell(mean: float | None, lo: float | None, hi: float | None, scored: int | None, n: int | None) -> str:
    """A judged mean with its CI for a table, saying how many answers the judge could not score.

    A condition without one usable score reads "no score: 6/6 answers unscored", never nan.
    """
    n = n or 0
    if mean is None or math.isnan(mean):
        return f"no score: {n}/{n} answers unscored"
    unscored = 0 if scored is None else n - scored
    no_interval = lo is None or hi is None or math.isnan(lo) or math.isnan(hi)
    text = f"{mean:.1f} (one question: no CI)" if no_interval else f"{mean:.1f} [{lo:.1f}, {hi:.1f}]"
    return f"{text} ({unscored}/{n} unscored)" if unscored else text


def _judged(row: dict[str, Any], metric: str) -> str:
    """The mean of a judged metric, or why there is none."""
    if row[f"{metric}_mean"] is None and row["n"]:
        return score_cell(None, None, None, _int(row.get(f"{metric}_scored")), row["n"])
    return _fmt(row[f"{metric}_mean"])


def _summary_rows(run: RunData) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    previous = None
    for r in run.summary:
        group = (r["method"], r["layer"])
        rows.append(
            {
                "group_start": bool(rows) and group != previous,  # a rule between (method, layer) groups
                "method": r["method"],
                "layer": "—" if r["layer"] is None else str(r["layer"]),
                "coef": _fmt_coef(r["coef"]),
                "n": "—" if r["n"] is None else str(r["n"]),
                "trait": _judged(r, "trait"),
                "trait_ci": _ci(r["trait_lo"], r["trait_hi"]),
                "coherence": _judged(r, "coherence"),
                "coherence_ci": _ci(r["coherence_lo"], r["coherence_hi"]),
                "collapse": "—" if r["collapse_rate"] is None else f"{r['collapse_rate'] * 100:.1f}%",
                "collapse_ci": _ci(r["collapse_lo"], r["collapse_hi"], scale=100.0),
                "perplexity": _fmt(r["perplexity_mean"], 2),
                # 0-100 heat for the trait cell: a light tint, strongest at 100
                "heat": "" if r["trait_mean"] is None else f"{max(0.0, min(100.0, r['trait_mean'])) / 100 * 0.45:.3f}",
            }
        )
        previous = group
    return rows


def _layer_rows(run: RunData) -> list[dict[str, Any]]:
    if not run.layers:
        return []
    chosen = _int(run.layers.get("chosen"))
    return [
        {
            "layer": _int(r["layer"]),
            "auroc": _fmt(_float(r.get("auroc")), 3),
            "cohens_d": _fmt(_float(r.get("cohens_d")), 2),
            "effect": _fmt(_float(r.get("effect"))),
            "coherence": _fmt(_float(r.get("coherence"))),
            "chosen": _int(r["layer"]) == chosen,
        }
        for r in run.layers["rows"]
    ]


def _blend_rows(run: RunData) -> list[dict[str, str]]:
    """The multi-layer blends of layers.json ("auto:K": weights per layer) as text."""
    blends = run.layers.get("blends") if run.layers else None
    if not isinstance(blends, dict):
        return []
    rows = []
    for spec, blend in sorted(blends.items(), key=lambda kv: _layer_key(kv[0])):
        weights = blend.get("weights", {}) if isinstance(blend, dict) else {}
        text = ", ".join(f"layer {layer} × {w:.2f}" for layer, w in weights.items() if _float(w) is not None)
        rows.append({"spec": str(spec), "weights": text, "note": str(blend.get("note") or "") if isinstance(blend, dict) else ""})
    return rows


def _examples(run: RunData) -> list[dict[str, Any]]:
    """Per (method, layer): the first questions, one answer (lowest sample) per coefficient."""
    groups: dict[tuple, dict[int, dict[float, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    questions: dict[int, str] = {}
    for record in run.results:
        qid = _int(record.get("question_id"))
        qid = -1 if qid is None else qid
        questions.setdefault(qid, str(record.get("question", "")))
        coef = record["coef"]
        by_coef = groups[(record["method"], record["layer"])][qid]
        best = by_coef.get(coef)
        if best is None or (_int(record.get("sample")) or 0) < (_int(best.get("sample")) or 0):
            by_coef[coef] = record
    out = []
    for (method, layer), by_question in sorted(groups.items(), key=lambda kv: (kv[0][0], _layer_key(kv[0][1]))):
        items = []
        for qid in sorted(by_question)[:EXAMPLE_QUESTIONS]:
            answers = []
            for coef in sorted(by_question[qid], key=lambda c: -math.inf if c is None else c):
                record = by_question[qid][coef]
                answer = str(record.get("answer", ""))
                if len(answer) > MAX_ANSWER_CHARS:
                    answer = answer[:MAX_ANSWER_CHARS] + " […]"
                answers.append(
                    {
                        "coef": _fmt_coef(coef),
                        "answer": answer,
                        "trait": _fmt(_float(record.get("trait"))),
                        "coherence": _fmt(_float(record.get("coherence"))),
                        "collapsed": bool(record.get("collapsed")),
                    }
                )
            items.append({"id": qid, "question": questions.get(qid, ""), "answers": answers})
        out.append({"label": _series_label(method, layer), "questions": items})
    return out


_CAPTIONS = {
    "trait_vs_coef": "Trait score vs steering coefficient, one line per method and layer; bands are 95% CIs.",
    "coherence_vs_coef": "Coherence vs steering coefficient; bands are 95% CIs.",
    "layers": "Per-layer AUROC, Cohen's d and measured steering effect; the dashed line marks the chosen layer.",
    "projections": "Projections of the positive and negative extraction answers onto the vector; dashed lines are means.",
}


def _expressibility(run: RunData) -> dict[str, Any] | None:
    data = run.config.get("expressibility")
    if not isinstance(data, dict) or "line" not in data:
        return None
    return {"line": data["line"], "weak": data.get("level") != "strongly expressed"}


def _verdict_lines(run: RunData) -> list[str]:
    """The run's verdicts (verdicts.py), the same lines the CLI prints; none without confidence intervals."""
    from .verdicts import sweep_verdicts  # noqa: PLC0415

    if run.summary_from_results:
        return []
    from .expressibility import Expressibility  # noqa: PLC0415

    data = run.config.get("expressibility")
    expressed = Expressibility.from_dict(data).expressed if isinstance(data, dict) else None
    return [v.line() for v in sweep_verdicts(run.summary, run.results, expressed)]


def render_html(run: RunData, figures: dict[str, Path]) -> str:
    """The report as one HTML string (templates/report.html.j2, figures inlined as data URIs)."""
    from jinja2 import Environment, PackageLoader

    env = Environment(loader=PackageLoader("personactl", "templates"), autoescape=True)
    results = run.results
    facts = {
        "records": len(results),
        "methods": ", ".join(sorted({str(r["method"]) for r in results})),
        "layers": ", ".join(str(x) for x in sorted({r["layer"] for r in results if r["layer"] is not None}, key=_layer_key)) or "—",
        "coefs": ", ".join(_fmt_coef(c) for c in sorted({r["coef"] for r in results if r["coef"] is not None})),
        "questions": len({r.get("question_id") for r in results}),
        "null_trait": sum(_float(r.get("trait")) is None for r in results),
        "null_coherence": sum(_float(r.get("coherence")) is None for r in results),
    }
    return env.get_template("report.html.j2").render(
        title=run.title,
        run_name=run.run_dir.name,
        facts=facts,
        notes=run.notes,
        summary_rows=_summary_rows(run),
        figures=[{"uri": data_uri(path), "caption": _CAPTIONS.get(name, name)} for name, path in figures.items()],
        layer_rows=_layer_rows(run),
        blends=_blend_rows(run),
        expressibility=_expressibility(run),
        verdicts=_verdict_lines(run),
        chosen=_int(run.layers.get("chosen")) if run.layers else None,
        reason="; ".join(str(run.layers.get(k)) for k in ("reason", "probe") if run.layers.get(k)) if run.layers else "",
        examples=_examples(run),
        n_questions=EXAMPLE_QUESTIONS,
        config_json=json.dumps(run.config, indent=2, ensure_ascii=False, sort_keys=False, default=str),
    )


def write_report(run_dir: str | Path) -> Path:
    """Draw the figures and write `<run_dir>/report.html` atomically; returns its path."""
    run = load_run(run_dir)
    figures = _make_figures(run)
    return write_text_atomic(run.run_dir / "report.html", render_html(run, figures))
