"""Screening training data by projection difference, on a tiny model (the arithmetic and the files)."""

from __future__ import annotations

import json

import pytest
import torch
from markupsafe import escape

from personactl.cli import run
from personactl.screening import ANSWERS, AnswerCache, conclusion


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
    printed = capsys.readouterr().out
    assert "mean projection difference" in printed and "verdict:" in printed
    low, high = summary["mean_difference_ci"]
    assert low <= summary["mean_difference"] <= high and summary["conclusion"] == conclusion(summary["mean_difference"], low, high)
    page = (out / "screen.html").read_text()
    assert (out / "histogram.png").read_bytes()[:4] == b"\x89PNG" and "data:image/png;base64," in page
    assert all(str(escape(r["model_answer"])) in page for r in rows[:3])


def test_a_rerun_reuses_the_cached_model_answers(model_dir, vector_file, tmp_path, monkeypatch):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"question {i}", "response": "answer " * (i + 1)}) + "\n" for i in range(5)))
    out = tmp_path / "screen"
    args = ["screen", "--data", str(data), "--vector", str(vector_file), "--out", str(out), "--model", str(model_dir),
            "--max-new-tokens", "5"]
    assert run([*args, "--layer", "2"]) == 0
    first = {json.loads(line)["index"]: json.loads(line)["model_answer"] for line in (out / "screen.jsonl").read_text().splitlines()}
    assert len((out / ANSWERS).read_text().splitlines()) == 5
    monkeypatch.setattr("personactl.screening.generate", lambda *a, **k: (_ for _ in ()).throw(AssertionError("generated again")))
    assert run([*args, "--layer", "1"]) == 0
    second = {json.loads(line)["index"]: json.loads(line)["model_answer"] for line in (out / "screen.jsonl").read_text().splitlines()}
    assert second == first and json.loads((out / "summary.json").read_text())["layer"] == 1


def test_the_answer_cache_skips_a_line_cut_short_by_a_kill(tmp_path):
    path = tmp_path / ANSWERS
    cache = AnswerCache(path)
    cache.add(["a", "b"], ["first", "second"])
    with open(path, "a") as fh:
        fh.write('{"key": "c", "answ')
    assert AnswerCache(path).answers == {"a": "first", "b": "second"}


def test_conclusion_follows_the_interval():
    assert conclusion(0.5, 0.1, 0.9).startswith("pushes toward")
    assert conclusion(-0.5, -0.9, -0.1).startswith("pushes away")
    assert conclusion(0.1, -0.2, 0.4).startswith("cannot conclude")
    assert conclusion(None, None, None).startswith("cannot conclude")


@pytest.mark.parametrize(("case", "message"), [
    ("other_model", "hidden size"),
    ("no_responses", "no usable examples"),
    ("layer_out_of_range", "layer 9"),
])
def test_bad_input_is_one_line_and_writes_nothing(case, message, model_dir, vector_file, tmp_path, capsys):
    from personactl import PersonaVector

    data = tmp_path / "train.jsonl"
    rows = [{"instruction": f"q{i}", "output": "" if case == "no_responses" else "an answer"} for i in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vector = vector_file
    if case == "other_model":
        vector = PersonaVector(torch.randn(31, 576), trait="pirate").save(tmp_path / "smollm2.safetensors")
    out = tmp_path / "screen"
    args = ["screen", "--data", str(data), "--vector", str(vector), "--out", str(out), "--model", str(model_dir), "--max-new-tokens", "3"]
    assert run([*args, "--layer", "9" if case == "layer_out_of_range" else "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1
    assert not out.exists()


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
    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    assert run(["screen", "--data", "d.jsonl", "--vector", "v.safetensors", "--out", str(tmp_path / "s"), "--filter-out", "10"]) == 2
    assert "go together" in capsys.readouterr().err


def test_screen_refuses_someone_elses_folder_and_overwriting_its_input(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
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


def test_an_empty_own_answer_leaves_that_sample_unscored(tiny, monkeypatch):
    from personactl import PersonaVector
    from personactl.lora.adapters import PersonaData
    from personactl.screening import screen

    monkeypatch.setattr("personactl.screening.generate", lambda backbone, prompts, **k: ["" if i == 1 else "some answer"
                                                                                          for i in range(len(prompts))])
    torch.manual_seed(0)
    vector = PersonaVector(torch.randn(tiny.n_layers + 1, tiny.hidden_size), trait="t")
    result = screen(tiny, PersonaData(["q0", "q1", "q2"], ["a0", "a1", "a2"]), vector, 2, max_new_tokens=3)
    assert [r["difference"] is None for r in result.rows] == [False, True, False]
    assert result.rows[1]["data_projection"] is not None and result.summary["scored"] == 2
