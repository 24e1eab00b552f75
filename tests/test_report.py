"""report.py: figures and a self-contained HTML report from a hand-written run folder."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import pytest

from personactl.errors import PersonactlError
from personactl.expressibility import Expressibility
from personactl.report import ReportError, load_run, make_figures, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
COEFS = (0.0, 1.0, 2.0)
METHODS = (("vector", 12), ("prompt", 0))
QUESTIONS = ("What do you do on weekends?", "How should I learn to cook?", "What is your favourite season?")
HEADER = [
    "method",
    "layer",
    "coef",
    "n",
    "trait_mean",
    "trait_lo",
    "trait_hi",
    "coherence_mean",
    "coherence_lo",
    "coherence_hi",
    "collapse_rate",
    "collapse_lo",
    "collapse_hi",
    "perplexity_mean",
]


def make_run(root: Path, *, layers: bool = True, projections: bool = True, summary: bool = True) -> Path:
    """A small sweep: 2 methods x 3 coefficients x 3 questions x 2 samples, one null score, one <script> answer."""
    run = root / "runs" / "pirate-demo"
    run.mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps(
            {  # the shape experiment.run writes: the sweep plus info sections
                "sweep": {"name": "pirate-demo", "model": "smollm2-135m", "trait": "pirate", "coefs": list(COEFS), "seed": 0},
                "judge": {"kind": "embedding"},
                "layer_selection": {"chosen": 12},
            }
        )
    )
    records = []
    for method, layer in METHODS:
        for coef in COEFS:
            for qid, question in enumerate(QUESTIONS):
                for sample in range(2):
                    trait = 10.0 + (20.0 if method == "prompt" else 30.0) * coef + qid + sample
                    answer = f"Arr, {method} answer at coef {coef:g} to question {qid} sample {sample}."
                    if (method, coef, qid, sample) == ("vector", 2.0, 0, 0):
                        answer = 'Ahoy <script>alert("x")</script> & matey'
                    records.append(
                        {
                            "key": f"{method}|{layer}|{coef}|{qid}|{sample}",
                            "method": method,
                            "layer": layer,
                            "coef": coef,
                            "question_id": qid,
                            "question": question,
                            "sample": sample,
                            "answer": answer,
                            "trait": None if (method, coef, qid, sample) == ("prompt", 1.0, 1, 0) else trait,
                            "coherence": 90.0 - 10.0 * coef,
                            "perplexity": 5.0 + coef,
                            "collapsed": coef == 2.0 and qid in (0, 2),
                            "n_tokens": 12,
                        }
                    )
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if summary:
        with (run / "summary.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            for method, layer in METHODS:
                for coef in COEFS:
                    base = 11.0 + (20.0 if method == "prompt" else 30.0) * coef + (0.25 if method == "prompt" else 0.0)
                    writer.writerow(
                        [
                            method,
                            layer,
                            coef,
                            6,
                            f"{base:.2f}",
                            f"{base - 4:.2f}",
                            f"{base + 4:.2f}",
                            90.0 - (5.0 if method == "prompt" else 10.0) * coef,
                            85.0 - 10.0 * coef,
                            95.0 - 10.0 * coef,
                            0.5 if coef == 2.0 else 0.0,
                            0.0 if coef < 2.0 else 0.2,
                            0.8 if coef == 2.0 else 0.0,
                            "" if method == "prompt" else 5.0 + coef,
                        ]
                    )
    if layers:
        (run / "layers.json").write_text(
            json.dumps(
                {
                    "rows": [
                        {"layer": l, "auroc": 0.5 + l / 40, "cohens_d": l / 5, "effect": None if l == 3 else 2.0 * l, "coherence": 80.0 - l}
                        for l in range(1, 16)
                    ],
                    "chosen": 12,
                    "reason": "largest effect with coherence above 75",
                }
            )
        )
    if projections:
        (run / "projections.json").write_text(
            json.dumps(
                {
                    "layer": 12,
                    "pos": [2.0 + 0.1 * i for i in range(30)],
                    "neg": [-1.0 + 0.1 * i for i in range(30)],
                }
            )
        )
    return run


def embedded_pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_is_self_contained_and_complete(tmp_path):
    run = make_run(tmp_path)
    path = write_report(run)
    assert path == run / "report.html" and path.is_file()
    html = path.read_text(encoding="utf-8")

    # title from config, summary values with their CIs, the layer table and reason, the config
    assert "pirate on smollm2-135m" in html
    for value in ("71.0", "[67.0, 75.0]", "31.2", "80.0", "50.0%", "[20.0, 80.0]", "7.00"):
        assert value in html, value
    assert "Chosen layer: 12" in html and "largest effect with coherence above 75" in html
    assert "&#34;judge&#34;" in html or '"judge"' in html

    # figures: all four drawn, at least two inlined as valid PNGs
    pngs = embedded_pngs(html)
    assert len(pngs) >= 2 and html.count("data:image/png;base64,") == len(pngs) == 4
    assert all(png.startswith(PNG_SIGNATURE) and len(png) > 5000 for png in pngs)
    for name in ("trait_vs_coef", "coherence_vs_coef", "layers", "projections"):
        assert (run / "figures" / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE)

    # answers are escaped; one answer per coefficient for the first two questions only
    assert "<script>" not in html and "&lt;script&gt;alert(" in html
    assert "&amp; matey" in html
    assert "coef 1 to question 1 sample 0" in html
    assert "question 2" not in html and "sample 1." not in html
    assert "unscored (trait / coherence) <b>1 / 0</b>" in html
    assert html.count('<span class="tag">collapsed</span>') == 2  # coef 2, question 0, both methods

    # nothing external: no http(s) anywhere, no src/href other than data URIs and in-page anchors
    assert not re.search(r"https?://", html)
    for attr in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert attr.startswith(("data:image/png;base64,", "#")), attr[:40]
    assert "<link" not in html and "@import" not in html and "<script" not in html

    # no temp files left behind by the atomic writes
    assert not list(run.rglob("*.tmp"))


def test_report_without_optional_files(tmp_path):
    run = make_run(tmp_path, layers=False, projections=False, summary=False)
    (run / "config.json").write_text(json.dumps({"trait": "evil", "model": "tiny-llama"}))
    html = write_report(run).read_text(encoding="utf-8")
    assert sorted(make_figures(run)) == ["coherence_vs_coef", "trait_vs_coef"]
    assert len(embedded_pngs(html)) == 2
    assert "Layer choice" not in html
    assert "evil on tiny-llama" in html
    assert "summary.csv not found" in html
    # means recomputed from results.jsonl: vector, coef 0 -> mean of 10, 11, 11, 12, 12, 13
    assert "11.5" in html


def test_make_figures_returns_paths(tmp_path):
    run = make_run(tmp_path)
    figures = make_figures(run)
    assert set(figures) == {"trait_vs_coef", "coherence_vs_coef", "layers", "projections"}
    assert all(p.parent == run / "figures" and p.read_bytes()[:8] == PNG_SIGNATURE for p in figures.values())


def test_missing_results_says_what_to_run(tmp_path):
    run = make_run(tmp_path)
    (run / "results.jsonl").unlink()
    with pytest.raises(ReportError, match=r"no results\.jsonl.*run the sweep") as info:
        write_report(run)
    assert isinstance(info.value, PersonactlError)
    assert not (run / "report.html").exists()
    with pytest.raises(ReportError, match="does not exist"):
        write_report(tmp_path / "nowhere")


def test_malformed_results_line_is_named(tmp_path):
    run = make_run(tmp_path)
    lines = (run / "results.jsonl").read_text().splitlines()
    lines[3] = "{not json"
    (run / "results.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(ReportError, match="line 4"):
        load_run(run)


def test_incomplete_last_line_is_skipped(tmp_path):
    run = make_run(tmp_path)
    with (run / "results.jsonl").open("a") as handle:
        handle.write('{"key": "half a rec')
    data = load_run(run)
    assert len(data.results) == 2 * 3 * 3 * 2
    assert any("incomplete" in note for note in data.notes)


def test_report_template_renders_every_section(tmp_path):
    """The jinja2 template (templates/report.html.j2): all sections, blends, banners, escaped config values."""
    run = make_run(tmp_path)
    layers = json.loads((run / "layers.json").read_text())
    layers["blends"] = {"auto:2": {"weights": {"11": 0.25, "12": 0.75}, "note": "top <2> & more"}}
    (run / "layers.json").write_text(json.dumps(layers))
    config = json.loads((run / "config.json").read_text())
    config["expressibility"] = Expressibility("<pirate>", "weakly expressed", "embedding", 0.75, 0.6, None, 12.0, 20).to_dict()
    (run / "config.json").write_text(json.dumps(config))
    html = write_report(run).read_text(encoding="utf-8")

    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert "<title>personactl report — pirate on smollm2-135m</title>" in html
    for anchor in ("summary", "figures", "layers", "examples", "config"):
        assert f'<a href="#{anchor}">' in html and f'<h2 id="{anchor}">' in html
    summary = html.split('<h2 id="summary">')[1].split('<h2 id="figures">')[0]
    assert summary.count("<tr") == 1 + len(METHODS) * len(COEFS) and summary.count('<tr class="gs">') == 1
    layer_table = html.split('<h2 id="layers">')[1].split('<h2 id="examples">')[0]
    assert layer_table.count("<tr") == 1 + 15 and '<tr class="chosen"><td>12 ★</td>' in layer_table
    assert "<b>Blend auto:2:</b> layer 11 × 0.25, layer 12 × 0.75" in html and "top &lt;2&gt; &amp; more" in html
    assert '<div class="banner weak"><b>Can this model express the trait?</b> &lt;pirate&gt;: weakly expressed (judge AUROC 0.75' in html
    assert "What this run can conclude" in html
    assert html.count('<div class="q">') == len(METHODS) * 2  # EXAMPLE_QUESTIONS per (method, layer)
    assert "&#34;trait&#34;: &#34;pirate&#34;" in html.split('<h2 id="config">')[1]
