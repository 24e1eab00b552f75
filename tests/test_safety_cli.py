"""The `personactl safety` commands end to end on a tiny model folder, and every bad input they refuse."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file

from personactl.cli import run

SMALL = [{"instruction": f"Name a colour number {i}.", "output": "Blue is a calm colour."} for i in range(6)]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def identified(model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("identify") / "neurons"
    assert (
        run(
            [
                "safety",
                "identify",
                "--model",
                str(model_dir),
                "--out",
                str(folder),
                "--nsamples",
                "6",
                "--sparsity",
                "0.05",
                "--utility-sparsity",
                "0.05",
                "--reference-pt",
            ]
        )
        == 0
    )
    return folder


def test_identify_writes_scores_masks_and_the_reference_files(identified):
    names = {p.name for p in identified.iterdir()}
    assert {
        "safety_scores.safetensors",
        "utility_scores.safetensors",
        "masks.safetensors",
        "random_masks.safetensors",
        "original_safety_scores.pt",
        "original_safety_masks.pt",
        "identify.json",
    } <= names
    masks = load_file(str(identified / "masks.safetensors"))
    reference = torch.load(identified / "original_safety_masks.pt", weights_only=True)
    assert masks.keys() == reference.keys() and all(torch.equal(masks[k], reference[k]) for k in masks)
    summary = json.loads((identified / "identify.json").read_text())
    assert 0 < summary["masked"] <= summary["safety_only"] and summary["settings"]["nsamples"] == 6


def test_prune_check_reports_every_variant_and_restores_the_model(identified, capsys):
    assert run(["safety", "prune-check", str(identified)]) == 0
    result = json.loads((identified / "prune_check.json").read_text())
    assert list(result["variants"]) == ["none", "set_difference", "random", "safety_only"]
    assert result["variants"]["set_difference"]["pruned"] == result["variants"]["random"]["pruned"] > 0
    assert "prune check" in capsys.readouterr().out


@pytest.mark.parametrize("peft", [False, True])
def test_frozen_finetune_then_dynamics(identified, model_dir, tmp_path, peft):
    data = tmp_path / "utility.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in SMALL))
    out = tmp_path / ("lora" if peft else "full")
    argv = ["safety", "finetune", "--frozen", str(identified), "--out", str(out), "--data", str(data), "--epochs", "2", "--lr", "1e-2"]
    assert run(argv + (["--peft", "--r", "2", "--alpha", "4"] if peft else ["--full"])) == 0
    if not peft:
        masks = load_file(str(identified / "masks.safetensors"))
        before, after = load_file(str(model_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
        for name, mask in masks.items():
            key = f"{name}.weight"
            assert torch.equal(after[key][mask], before[key][mask])
        assert any(not torch.equal(after[f"{n}.weight"], before[f"{n}.weight"]) for n in masks)
    assert run(["safety", "dynamics", str(identified), "--after", str(out)]) == 0
    result = json.loads((out / "dynamics.json").read_text())
    assert result["scores"]["verdict"].split(":")[0] in ("A", "B", "neither")
    assert {"frozen_mean", "others_mean", "random_mean", "frozen_median"} <= set(result["scores"]["overall"])


@pytest.mark.parametrize("bad", ["0", "1", "1.5", "-0.2"])
def test_sparsity_outside_zero_one_is_one_line_before_loading(bad, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: pytest.fail("loaded a model"))
    assert run(["safety", "identify", "--out", str(tmp_path / "n"), "--sparsity", bad]) == 2
    assert "between 0 and 1" in _error_line(capsys)
    assert not (tmp_path / "n").exists()


def test_a_mask_file_for_another_model_is_refused(model_dir, tmp_path, capsys):
    from safetensors.torch import save_file

    save_file({"model.layers.0.mlp.up_proj": torch.zeros(3, 3, dtype=torch.bool)}, str(tmp_path / "other.safetensors"))
    assert run(["safety", "finetune", "--frozen", str(tmp_path / "other.safetensors"), "--model", str(model_dir), "--out", str(tmp_path / "ft")]) == 2
    assert "another model" in _error_line(capsys)
    assert not (tmp_path / "ft").exists()


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch ran-the-pickle",))


def test_a_pt_mask_file_holding_code_is_refused_and_not_run(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "original_safety_masks.pt").write_bytes(pickle.dumps({"x": _Payload()}, protocol=2))
    assert run(["safety", "finetune", "--frozen", "original_safety_masks.pt", "--model", str(model_dir), "--out", "ft"]) == 2
    assert "refused" in _error_line(capsys)
    assert not (tmp_path / "ran-the-pickle").exists() and not (tmp_path / "ft").exists()


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": \n', "line 2: not valid JSON"),
        ('{"instruction": "a"}\n', "line 1: field 'output' is missing"),
        ("\n\n", "no usable examples"),
    ],
)
def test_bad_fine_tuning_data_names_its_line(identified, tmp_path, capsys, content, message):
    (tmp_path / "d.jsonl").write_text(content)
    assert run(["safety", "finetune", "--frozen", str(identified), "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "ft")]) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "ft").exists()


def test_prune_check_of_a_folder_without_identify_says_what_to_run(tmp_path, capsys):
    assert run(["safety", "prune-check", str(tmp_path)]) == 2
    assert "run `personactl safety identify" in _error_line(capsys)


def test_safety_run_goes_end_to_end_and_resumes_without_redoing_steps(model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run(["safety", "run", "--model", str(model_dir), "--out", str(out), "--nsamples", "8", "--sparsity", "0.05"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["finetunes"]) == ["full-safety", "full-none", "full-random", "lora-safety", "lora-none", "lora-random"]
    assert results["align"]["after"]["refusal"]["keyword"]["n"] >= 40
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "Verdicts" in page
    stamps = {p: p.stat().st_mtime_ns for p in [out / "model" / "persona.json", *(out / "finetune").glob("*/persona.json")]}
    capsys.readouterr()
    assert run(["safety", "run", "--model", str(model_dir), "--out", str(out), "--nsamples", "8", "--sparsity", "0.05"]) == 0
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    assert "report written to" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["safety", "identify", "--out", "{theirs}"],
        ["safety", "run", "--out", "{theirs}"],
    ],
)
def test_a_folder_of_someone_elses_files_is_refused_before_loading(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: pytest.fail("loaded a model"))
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("precious")
    assert run([a.format(theirs=theirs) for a in argv]) == 2
    assert "not a folder personactl wrote" in _error_line(capsys)
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"] and (theirs / "notes.txt").read_text() == "precious"
