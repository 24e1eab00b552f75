"""Screening training data by projection difference, on a tiny model (the arithmetic and the files)."""

from __future__ import annotations

import json

import torch

from personactl.cli import run


def test_screen_ranks_samples_by_projection_difference_and_filters_the_top(model_dir, vector_file, tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"question {i}", "output": "x" * (i + 1) * 3}) + "\n" for i in range(8)))
    out, clean = tmp_path / "screen", tmp_path / "clean.jsonl"
    assert run(["screen", "--data", str(data), "--vector", str(vector_file), "--out", str(out), "--model", str(model_dir), "--layer", "2",
                "--max-new-tokens", "6", "--filter-out", "25", "--write", str(clean)]) == 0
    rows = [json.loads(line) for line in (out / "screen.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    scored = [r for r in rows if r["difference"] is not None]
    assert all(abs(r["difference"] - (r["data_projection"] - r["model_projection"])) < 1e-9 for r in scored)
    assert [r["difference"] for r in scored] == sorted((r["difference"] for r in scored), reverse=True)
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["mean_difference"] - sum(r["difference"] for r in scored) / len(scored)) < 1e-9
    kept = [json.loads(line)["instruction"] for line in clean.read_text().splitlines()]
    dropped = {r["prompt"] for r in rows[:2]}
    assert len(kept) == 6 and not dropped & set(kept)
    assert "mean projection difference" in capsys.readouterr().out


def test_the_projection_is_the_mean_over_the_answer_tokens(tiny):
    from personactl import PersonaVector
    from personactl.activations import collect
    from personactl.generation import chat_prompt, format_prompts
    from personactl.lora.adapters import PersonaData
    from personactl.screening import screen

    torch.manual_seed(0)
    vector = PersonaVector(torch.randn(tiny.n_layers + 1, tiny.hidden_size), trait="t")
    data = PersonaData(["a question", "another one"], ["first answer", "second answer"])
    result = screen(tiny, data, vector, 2, max_new_tokens=4)
    prompts = format_prompts(tiny, [chat_prompt(q) for q in data.questions])
    expected = collect(tiny, prompts, data.answers, positions="response_avg")[:, 2] @ vector.unit(2)
    assert torch.allclose(torch.tensor([r["data_projection"] for r in result.rows]), expected, atol=1e-4)


def test_filter_out_needs_write(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("personactl.cli._load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    assert run(["screen", "--data", "d.jsonl", "--vector", "v.safetensors", "--out", str(tmp_path / "s"), "--filter-out", "10"]) == 2
    assert "go together" in capsys.readouterr().err


def test_screen_refuses_someone_elses_folder_and_overwriting_its_input(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("personactl.cli._load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("precious")
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "q", "output": "a"}\n')
    assert run(["screen", "--data", str(data), "--vector", "v.safetensors", "--out", str(theirs)]) == 2
    assert "not a folder personactl wrote" in capsys.readouterr().err
    assert run(["screen", "--data", str(data), "--vector", "v.safetensors", "--out", str(tmp_path / "s"), "--filter-out", "10",
                "--write", str(data)]) == 2
    assert "is the --data file itself" in capsys.readouterr().err
    assert (theirs / "notes.txt").read_text() == "precious" and data.read_text() == '{"instruction": "q", "output": "a"}\n'
