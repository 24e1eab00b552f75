"""The numbers in docs/experiments.md are the ones the current code computes from the stored JSON beside it.

Each experiment script writes a section of docs/experiments.md between
`<!-- name -->` markers and docs/experiments/<name>.json; these tests re-read
both, without a model: every table is its JSON's rows, and every printed
correlation is what `correlate()` now gives on the stored per-checkpoint
numbers (a stale p-value fails here). A JSON or section the current code would
write differently fails, never skips, and says which script regenerates it.
"""

from __future__ import annotations

import json
import re
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from personactl.lora.projection import N_PERM, correlate

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "experiments.md"
JSONS = sorted((ROOT / "docs" / "experiments").glob("*.json"))
NUM = r"(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)"

sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "experiments"))
import _table  # noqa: E402


def _section(name: str) -> str:
    match = re.search(rf"<!-- {re.escape(name)} -->\n(.*?)<!-- /{re.escape(name)} -->", DOC.read_text(encoding="utf-8"), re.S)
    if match is None:
        pytest.fail(f"docs/experiments.md has no section <!-- {name} --> for docs/experiments/{name}.json")
    return match.group(1)


def _regenerate(name: str) -> str:
    """How to bring docs/experiments/<name>.json and its section up to date: the experiment script that writes them."""
    scripts = [p.stem for p in sorted((ROOT / "experiments").glob("*.py")) if f'"{name}"' in p.read_text(encoding="utf-8")]
    return f"docs/experiments/{name}.json is stale: regenerate it with `python experiments/{scripts[0] if scripts else '<its script>'}.py`"


def _close(printed: str, value: float) -> bool:
    """`printed` is `value` rounded to the digits it shows (half a unit in its last digit)."""
    exponent = Decimal(printed).as_tuple().exponent
    return abs(float(printed) - value) <= 0.5 * 10.0**exponent + 1e-12


def _pairs(data: dict) -> tuple[list[float], list[float]] | None:
    """(projections, judged trait) per checkpoint, from the raw numbers or, in older files, the table rows."""
    if "checkpoints" in data:
        return [p["projection"] for p in data["checkpoints"]], [p["judged_trait"] for p in data["checkpoints"]]
    rows = data["rows"]
    if rows and {"projection", "judged trait"} <= set(rows[0]):
        return [r["projection"] for r in rows], [r["judged trait"] for r in rows]
    return None


CORRELATED = [p for p in JSONS if _pairs(json.loads(p.read_text())) is not None]


@pytest.mark.parametrize("path", JSONS, ids=lambda p: p.stem)
def test_every_table_is_its_json(path):
    data, text = json.loads(path.read_text()), _section(path.stem)
    assert f"Machine: {data['machine']}" in text
    headers = list(data["rows"][0])
    expected = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    expected += ["| " + " | ".join(_table._fmt(r[h]) for h in headers) + " |" for r in data["rows"]]
    assert [line for line in text.splitlines() if line.startswith("|")] == expected, f"{_regenerate(path.stem)} (its table differs)"


def test_every_section_has_its_json():
    sections = re.findall(r"<!-- ([a-z0-9_]+) -->", DOC.read_text(encoding="utf-8"))
    missing = [name for name in sections if not (ROOT / "docs" / "experiments" / f"{name}.json").is_file()]
    assert not missing, "; ".join(f"{_regenerate(name)} (it is missing)" for name in missing)


def test_the_drift_experiment_is_among_the_checked_files():
    assert [p.stem for p in CORRELATED] == ["drift"]


@pytest.mark.parametrize("path", CORRELATED, ids=lambda p: p.stem)
def test_printed_correlation_is_what_correlate_gives_on_the_stored_numbers(path):
    data, text = json.loads(path.read_text()), _section(path.stem)
    settings = data.get("settings", {})
    x, y = _pairs(data)
    c = correlate(x, y, seed=settings.get("correlation_seed", 0), n_perm=settings.get("n_perm", N_PERM))
    if "correlation" in data and json.dumps(data["correlation"]) != json.dumps(c):
        pytest.fail(f"{_regenerate(path.stem)} (its stored correlation is not what correlate() gives now)")
    pearson = re.search(rf"Pearson r = {NUM} \((?:permutation )?p = {NUM}", text)
    spearman = re.search(rf"Spearman rho = {NUM} \((?:permutation )?p = {NUM}", text)
    assert pearson and spearman, "the section prints no Pearson r (p) or Spearman rho (p)"
    printed = {"pearson_r": pearson[1], "pearson_p": pearson[2], "spearman_rho": spearman[1], "spearman_p": spearman[2]}
    for key, value in printed.items():
        assert _close(value, c[key]), f"docs print {key} = {value}; correlate() on {path.name} gives {c[key]:.4g}"
    for key, (lo, hi) in ((k, v) for k, v in c.items() if k.endswith("_ci") or "_ci_" in k):
        assert f"{lo:.2f}..{hi:.2f}" in text, f"the section does not print {key} = {lo:.2f}..{hi:.2f}"
    assert f"{c['n']} checkpoints" in text


def test_drift_note_and_stored_correlation_recompute_exactly():
    import drift_mixtures  # noqa: PLC0415 - the script's own note writer

    data = json.loads((ROOT / "docs" / "experiments" / "drift.json").read_text())
    c = drift_mixtures.recompute(data)
    assert json.dumps(c) == json.dumps(data["correlation"]), f"{_regenerate('drift')} (its correlation differs)"
    settings = data["settings"]
    assert len(settings["shares"]) >= 9 and len(settings["seeds"]) >= 2 and c["n"] == len(data["checkpoints"])
    assert drift_mixtures.note(settings, c, data["checkpoints"]) in _section("drift"), f"{_regenerate('drift')} (its note differs)"


@pytest.mark.parametrize(
    "name, script",
    [
        ("preventative", "preventative_steering"),
        ("persona_adapters", "persona_adapters"),
        ("conditional_steering", "conditional_steering"),
        ("capping", "capping"),
    ],
)
def test_notes_are_written_from_the_stored_settings(name, script):
    data = json.loads((ROOT / "docs" / "experiments" / f"{name}.json").read_text())
    if "settings" not in data:
        pytest.fail(f"{_regenerate(name)} (it has no 'settings' to write its note from)")
    module = __import__(script)
    try:
        expected = module.note(data["settings"])
    except KeyError as missing:
        pytest.fail(f"{_regenerate(name)} (its settings have no {missing}, which {script}.note() now reads)")
    assert expected in _section(name), f"{_regenerate(name)} ({script}.note() now writes another note)"


def test_the_side_by_side_note_is_written_from_its_stored_verdicts():
    import blackbox_side_by_side

    data = json.loads((ROOT / "docs" / "experiments" / "blackbox_side_by_side.json").read_text())
    if "verdicts" not in data or not isinstance(data["verdicts"], list) or "llamacpp_note" not in data["settings"]:
        pytest.fail(f"{_regenerate('blackbox_side_by_side')} (it has no verdicts or llamacpp_note to write its note from)")
    assert blackbox_side_by_side.note(data) in _section("blackbox_side_by_side"), (
        f"{_regenerate('blackbox_side_by_side')} (its note() now writes another note)"
    )


def test_the_screening_sections_are_recomputed_from_their_data():
    import screening_prediction  # noqa: PLC0415 - the script's own table and note writers

    data = json.loads((ROOT / "docs" / "experiments" / "screening_prediction.json").read_text())
    rows = screening_prediction.correlations(data["datasets"], data["settings"])
    assert json.dumps(rows) == json.dumps(data["correlations"]), f"{_regenerate('screening_prediction')} (correlations differ)"
    assert screening_prediction.prediction_note(data["settings"], rows, data["datasets"]) in _section("screening_prediction"), (
        f"{_regenerate('screening_prediction')} (its note differs)"
    )
    removal = json.loads((ROOT / "docs" / "experiments" / "screening_removal.json").read_text())
    comparison = {**screening_prediction.compare(removal["removals"]), "n_removed": removal["comparison"]["n_removed"]}
    assert comparison == removal["comparison"], f"{_regenerate('screening_removal')} (the comparison differs)"
    assert screening_prediction.removal_note(removal["settings"], comparison) in _section("screening_removal"), (
        f"{_regenerate('screening_removal')} (its note differs)"
    )


def test_expressibility_table_is_the_estimators_own_verdicts():
    """One source of truth: each row's verdict and AUROC are the stored verdict's (as the estimator gave it), the
    placebos are not expressed with CIs covering chance, and the threshold sits above every placebo's upper end."""
    from personactl.expressibility import EXPRESSED_AUROC, Expressibility

    data = json.loads((ROOT / "docs" / "experiments" / "expressibility.json").read_text())
    verdicts = {}
    for m in data["measured"].values():
        for stored in filter(None, [m["verdict"], m.get("shuffled")]):
            verdict = Expressibility.from_dict(stored)
            assert stored["line"] == verdict.line(), _regenerate("expressibility") + " (a stored line is not what the code prints)"
            verdicts[verdict.trait] = verdict
    for row in data["rows"]:
        v = verdicts[row["trait"]]
        assert (row["verdict"], row["judge AUROC"], row["CI from"], row["CI to"]) == (v.level, v.auroc, v.auroc_lo, v.auroc_hi)
    placebos = [v for name, v in verdicts.items() if name.startswith("placebo") or name.endswith("shuffled")]
    assert len(placebos) == 4 and all(v.level == "not expressed" and v.auroc_lo <= 0.5 <= v.auroc_hi for v in placebos)
    assert max(v.auroc_hi for v in placebos) < EXPRESSED_AUROC
    assert verdicts["pirate"].expressed and verdicts["silly"].expressed


def test_the_capping_table_is_written_from_its_stored_settings():
    import capping  # noqa: PLC0415 - the script's own table writer

    data = json.loads((ROOT / "docs" / "experiments" / "capping.json").read_text())
    assert json.dumps(capping.rows_of(data["settings"])) == json.dumps(data["rows"]), f"{_regenerate('capping')} (its table differs)"
