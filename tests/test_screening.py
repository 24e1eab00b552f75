"""Screening training data by projection difference, on a tiny model (the arithmetic and the files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from markupsafe import escape

from personactl.cli import run
from personactl.screening import ANSWERS, AnswerCache, conclusion


def test_screen_ranks_samples_by_projection_difference_and_filters_the_top(model_dir, vector_file, tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"question {i}", "output": "x" * (i + 1) * 3}) + "\n" for i in range(8)))
    out, clean = tmp_path / "screen", tmp_path / "clean.jsonl"
    assert (
        run(
            [
                "screen",
                "--data",
                str(data),
                "--vector",
                str(vector_file),
                "--out",
                str(out),
                "--model",
                str(model_dir),
                "--layer",
                "2",
                "--max-new-tokens",
                "6",
                "--filter-out",
                "25",
                "--write",
                str(clean),
            ]
        )
        == 0
    )
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
    args = ["screen", "--data", str(data), "--vector", str(vector_file), "--out", str(out), "--model", str(model_dir), "--max-new-tokens", "5"]
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


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("other_model", "hidden size"),
        ("no_responses", "no sample can be scored: 3 empty output"),
        ("layer_out_of_range", "layer 9"),
    ],
)
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
    assert (
        run(["screen", "--data", str(data), "--vector", "v.safetensors", "--out", str(tmp_path / "s"), "--filter-out", "10", "--write", str(data)])
        == 2
    )
    assert "is the --data file itself" in capsys.readouterr().err
    assert (theirs / "notes.txt").read_text() == "precious" and data.read_text() == '{"instruction": "q", "output": "a"}\n'


def test_an_empty_own_answer_leaves_that_sample_unscored(tiny, monkeypatch):
    from personactl import PersonaVector
    from personactl.lora.adapters import PersonaData
    from personactl.screening import screen

    monkeypatch.setattr(
        "personactl.screening.generate", lambda backbone, prompts, **k: ["" if i == 1 else "some answer" for i in range(len(prompts))]
    )
    torch.manual_seed(0)
    vector = PersonaVector(torch.randn(tiny.n_layers + 1, tiny.hidden_size), trait="t")
    result = screen(tiny, PersonaData(["q0", "q1", "q2"], ["a0", "a1", "a2"]), vector, 2, max_new_tokens=3)
    assert [r["difference"] is None for r in result.rows] == [False, True, False]
    assert result.rows[1]["data_projection"] is not None and result.summary["scored"] == 2


def _records_file(path):
    """11 records as a user writes them: compact and spaced JSON, raw non-ASCII (U+2028 too), a CRLF line, a blank line,
    no final newline. Line 4 has extra fields and an `input`, line 6 copies line 2 exactly, line 8 is blank, line 9 is
    over the length limit, line 11 has an empty output."""
    records = [
        '{"instruction": "question 0", "output": "a calm answer"}',
        '{"instruction":"question 1","output":"arr, the sea!"}',
        '{"prompt": "question 2", "response": "caf\u00e9 \u2028 na\u00efve"}',
        '{"instruction": "translate", "input": "bonjour", "output": "hello", "source": "web", "score": 0.5}',
        '{"instruction": "question 4", "output": "short"}\r',
        '{"instruction":"question 1","output":"arr, the sea!"}',
        '{"instruction": "question 6",   "output": "yes"}',
        '{"instruction": "question 7", "output": "' + "long " * 900 + '"}',
        '{"instruction": "question 8", "output": "a longer answer about ships"}',
        '{"instruction": "question 9", "output": "  "}',
        '{"instruction": "question 10", "output": "plain"}',
    ]
    lines = [(r + "\n").encode() for r in records[:-1]] + [records[-1].encode()]
    lines.insert(7, b"\n")  # a blank line: not a record, kept as it is
    path.write_bytes(b"".join(lines))
    return lines


def test_filtered_data_is_the_input_less_the_flagged_lines_byte_for_byte(model_dir, vector_file, tmp_path, capsys):
    data, out, clean = tmp_path / "train.jsonl", tmp_path / "screen", tmp_path / "clean.jsonl"
    lines = _records_file(data)
    assert (
        run(
            [
                "screen",
                "--data",
                str(data),
                "--vector",
                str(vector_file),
                "--out",
                str(out),
                "--model",
                str(model_dir),
                "--layer",
                "2",
                "--max-new-tokens",
                "6",
                "--filter-out",
                "5",
                "--write",
                str(clean),
            ]
        )
        == 0
    )
    rows = {r["line"]: r for r in map(json.loads, (out / "screen.jsonl").read_text().splitlines())}
    assert sorted(rows) == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12]  # every record has a row, numbered by file line
    assert rows[2]["difference"] == rows[6]["difference"] is not None  # the exact copy shares its original's score
    assert rows[4]["prompt"] == "translate\n\nbonjour"  # screened as fine-tuning reads it
    assert rows[9]["not_scored"].startswith("over 4000 characters") and rows[11]["not_scored"].startswith("empty output")
    assert {line for line, r in rows.items() if r["difference"] is None} == {9, 11}
    top = max((r for r in rows.values() if r["difference"] is not None), key=lambda r: r["difference"])
    assert top["line"] not in (2, 6)  # one record flagged (5% of 11 rounds up to 1)
    assert clean.read_bytes() == b"".join(line for number, line in enumerate(lines, 1) if number != top["line"])
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n"], summary["scored"], summary["prompts"]) == (11, 9, 8)
    assert summary["not_scored"] == {"over 4000 characters (fine-tuning skips it too)": 1, "empty output (no answer tokens to project)": 1}
    printed = " ".join(capsys.readouterr().out.split())
    assert (
        "kept but not scored: 1 over 4000 characters (fine-tuning skips it too) (lines 9); 1 empty output (no answer tokens to project) (lines 11)"
    ) in printed
    assert f"1 flagged samples dropped (lines {top['line']})" in printed and "over 9 of 11 samples (8 prompts" in printed


def test_training_reads_the_same_file_as_before(tmp_path):
    """The reader screening uses keeps every record with its line; training still skips copies, over-long and empty ones."""
    from personactl.lora.adapters import read_persona_data, read_persona_records

    _records_file(tmp_path / "d.jsonl")
    records, training = read_persona_records(tmp_path / "d.jsonl"), read_persona_data(tmp_path / "d.jsonl")
    assert records.lines == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12] and records.answers[2] == "caf\u00e9 \u2028 na\u00efve"
    assert training.lines == [1, 2, 3, 4, 5, 7, 10, 12]
    assert (training.duplicates, training.too_long, training.empty) == ([6], [9], [11])
    assert training.questions[3] == "translate\n\nbonjour" and training.sha256 == records.sha256


def test_a_copy_of_a_flagged_sample_is_flagged_with_it():
    from personactl.screening import Screening

    rows = [
        {"index": i, "line": i + 1, "difference": d, "not_scored": None if d is not None else "empty output"}
        for i, d in enumerate([3.0, 1.0, 3.0, None, -2.0, 0.5, 0.0, 2.0])
    ]
    result = Screening(rows, {})
    assert result.flagged(10) == {0, 2} and result.flagged(30) == {0, 2, 7}
    assert result.unscored() == {"empty output": [4]}


@pytest.mark.parametrize("design", ["48 prompts once each", "48 samples of 24 prompts"])
def test_the_mean_difference_ci_and_its_verdict_are_calibrated(design):
    """Statistic: the dataset's mean projection difference, its 95% CI (`mean_difference`) and the verdict (`conclusion`).

    Design: 48 training samples whose differences are skewed as a trait mixture makes them (1 sample in 8 a trait
    answer, 6 SD above the others) less the model's own answer to the sample's prompt (a term the prompt's samples
    share); prompts distinct, or drawn with replacement from 24 as the drift mixtures draw them. 4000 datasets each:
    with no effect the verdict claims a push in <= 7%; with a true mean difference of +0.5 the CI covers it in 93-97%.
    """
    from personactl.screening import mean_difference

    rng = np.random.default_rng(0)
    runs, false_claims, covered = 4000, 0, 0
    for _ in range(runs):
        for effect in (0.0, 0.5):
            prompts = np.arange(48) if design.startswith("48 prompts") else rng.integers(0, 24, 48)
            own = rng.normal(0.0, 1.0, 48)[prompts]
            data = rng.normal(0.0, 1.0, 48) + 6.0 * (rng.random(48) < 1 / 8) - 6.0 / 8
            mean, low, high = mean_difference((data - own + effect).tolist(), [f"q{p}" for p in prompts])
            if effect:
                covered += low <= effect <= high
            else:
                false_claims += not conclusion(mean, low, high).startswith("cannot conclude")
    print({"design": design, "false_positive_rate": false_claims / runs, "coverage": covered / runs})
    assert false_claims / runs <= 0.07 and 0.93 <= covered / runs <= 0.97


def test_a_cold_screen_reads_the_own_answers_while_generating_them(tiny, monkeypatch):
    from personactl import PersonaVector, activations
    from personactl.lora.adapters import PersonaData
    from personactl.screening import AnswerCache, screen

    seen, real = [], activations.collect_layer
    monkeypatch.setattr(activations, "collect_layer", lambda b, prompts, *a, **k: seen.append(len(prompts)) or real(b, prompts, *a, **k))
    torch.manual_seed(0)
    vector = PersonaVector(torch.randn(tiny.n_layers + 1, tiny.hidden_size), trait="t")
    data, cache = PersonaData(["q0", "q1", "q2"], ["a0", "a1 b", "a2"]), AnswerCache()
    cold = screen(tiny, data, vector, 2, max_new_tokens=4, cache=cache)
    scored_own = sum(1 for r in cold.rows if r["model_answer"].strip())
    one_pass = bool(tiny.tokenizer.chat_template)  # a model without a chat template has its answers cut after generation: two passes
    assert seen == [3 if one_pass else 3 + scored_own] and scored_own  # one pass: the own answers were read while generated
    seen.clear()
    warm = screen(tiny, data, vector, 2, max_new_tokens=4, cache=cache)  # cached answers: read in a second pass
    assert seen == [3 + len({r["prompt"] for r in warm.rows if r["model_answer"].strip()})]
    assert [r["model_answer"] for r in warm.rows] == [r["model_answer"] for r in cold.rows]
