"""`personactl bench` end to end on a tiny model: every method scored on the same questions at a strength tuned
elsewhere, files that resume, and the bad inputs it refuses."""

import json
from importlib.resources import files

import pytest
from conftest import tiny_backbone

from personactl.bench import ENTRIES, BenchConfig, Choice, bench_config, choose, run_bench, write_bench_report
from personactl.cli import run
from personactl.errors import BenchError

METHODS = ["none", "prompt", "fewshot", "vector", "multilayer", "adapter", "cap", "llamacpp-vector"]


def _config(**changes):
    settings = dict(
        traits=["pirate"],
        methods=METHODS,
        extraction_questions=21,  # the last 3 of pirate's 24 extraction questions tune
        n_questions=3,
        max_new_tokens=5,
        batch_size=16,
        blend=2,
        adapter_epochs=1,
        keep_unexpressed=True,  # a random tiny model expresses nothing
    )
    return BenchConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def benched(tmp_path_factory):
    backbone = tiny_backbone("llama")
    out = tmp_path_factory.mktemp("bench")
    return backbone, out, run_bench(_config(), out, backbone)


def test_every_method_is_scored_once_on_every_evaluation_question_at_its_tuned_strength(benched):
    _, out, result = benched
    (trait,) = result.traits
    assert trait.status == "benched"
    assert "llamacpp-vector" in trait.left_out  # a transformers-only tiny model has no GGUF for llama.cpp
    ran = [m for m in METHODS if m != "llamacpp-vector"]
    scored = {(r["method"], r["question_id"]) for r in trait.records}
    assert scored == {(m, q) for m in ran for q in range(3)} and len(trait.records) == len(scored)
    tuned = [json.loads(line) for line in (out / "pirate" / "tune.jsonl").read_text().splitlines()]
    for label in ran[1:]:
        choice = trait.choices[label]
        tried = {r["coef"] for r in tuned if r["method"] == label}
        assert choice.coef in tried and {t["coef"] for t in choice.tried} == tried
        assert {r["question_id"] for r in tuned if r["method"] == label} == {0, 1, 2}  # the 3 tuning questions
        assert {r["coef"] for r in trait.records if r["method"] == label} == {choice.coef}
    assert {r["question"] for r in tuned}.isdisjoint({r["question"] for r in trait.records})  # tuned elsewhere than scored
    assert {r["coef"] for r in trait.records if r["method"] == "none"} == {0.0}
    for r in trait.records:
        parts = (r["trait_score"], r["coherence"], r["relevance"])
        assert r["combined"] is None if None in parts else r["combined"] <= max(parts) + 1e-9


def test_costs_count_the_prompt_a_method_adds_and_its_set_up(benched):
    _, out, result = benched
    costs = result.traits[0].costs
    setup = json.loads((out / "pirate" / "setup.json").read_text())
    tuned = [json.loads(line) for line in (out / "pirate" / "tune.jsonl").read_text().splitlines()]
    assert costs["none"]["extra_prompt_tokens"] == 0 and costs["vector"]["extra_prompt_tokens"] == 0
    assert costs["prompt"]["extra_prompt_tokens"] > 10 and costs["fewshot"]["extra_prompt_tokens"] > costs["prompt"]["extra_prompt_tokens"]
    assert costs["none"]["relative_speed"] == pytest.approx(1.0)
    tuning = {m: sum(r["seconds"] for r in tuned if r["method"] == m) for m in ("prompt", "vector", "adapter")}
    assert costs["prompt"]["setup_s"] == pytest.approx(tuning["prompt"]) and tuning["prompt"] > 0  # a prompt needs no extraction
    assert costs["vector"]["setup_s"] == pytest.approx(setup["extraction"] + setup["layers"] + tuning["vector"])
    assert costs["adapter"]["setup_s"] == pytest.approx(setup["extraction"] + setup["adapter"] + tuning["adapter"]) and setup["adapter"] > 0
    assert costs["none"]["setup_s"] == 0


def test_a_rerun_resumes_without_generating_again(benched, monkeypatch):
    backbone, out, result = benched
    score = out / "pirate" / "score.jsonl"
    lines = score.read_text().splitlines()
    score.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:20])  # a kill mid-write: one record lost, one cut
    again = run_bench(_config(), out, backbone)

    def timeless(records):  # the regenerated records took their own time
        return sorted(json.dumps({**r, "seconds": None}, sort_keys=True) for r in records)

    assert timeless(again.records) == timeless(result.records)
    monkeypatch.setattr("personactl.evaluate.LocalRunner.run", lambda *a: pytest.fail("a finished bench generated again"))
    run_bench(_config(), out, backbone)


def test_the_report_writes_a_leaderboard_and_says_where(benched):
    _, out, result = benched
    report = write_bench_report(result)
    assert all(path.exists() for path in report.paths)
    assert report.verdicts


def test_a_trait_the_model_does_not_express_is_skipped_with_its_auroc(tmp_path):
    placebo = json.loads((files("personactl") / "data" / "traits" / "pirate.json").read_text())
    placebo["name"] = "placebo"
    placebo["instructions"] = [{"pos": p["neg"], "neg": p["neg"]} for p in placebo["instructions"]]  # nothing to tell apart
    (tmp_path / "placebo.json").write_text(json.dumps(placebo))
    result = run_bench(
        _config(traits=[str(tmp_path / "placebo.json")], keep_unexpressed=False, methods=["vector"]), tmp_path / "b", tiny_backbone("llama")
    )
    (trait,) = result.traits
    assert trait.status == "skipped" and "AUROC" in trait.reason and not (tmp_path / "b" / "placebo" / "tune.jsonl").exists()
    assert json.loads((tmp_path / "b" / "placebo" / "status.json").read_text())["status"] == "skipped"
    assert write_bench_report(result).verdicts == ["no trait was benched: every one was skipped (see the skipped list)"]


# --- the tuning rule ----------------------------------------------------------------------------------------------


def _tuning(rows):
    return [{"coef": c, "question_id": q, "trait_score": t, "coherence": h} for c, t, h in rows for q in range(3)]


def test_the_largest_trait_that_keeps_coherence_above_the_floor_is_chosen():
    chosen = choose(ENTRIES["vector"], _tuning([(1, 20, 90), (2, 50, 70), (4, 90, 30)]), floor=50)
    assert isinstance(chosen, Choice) and chosen.coef == 2 and chosen.meets_floor and chosen.trait == 50


def test_when_no_strength_keeps_the_floor_the_most_coherent_is_taken_and_marked():
    chosen = choose(ENTRIES["vector"], _tuning([(1, 20, 40), (2, 50, 30)]), floor=50)
    assert chosen.coef == 1 and not chosen.meets_floor and "no strength kept coherence" in chosen.line(50)


def test_a_defence_takes_the_smallest_trait():
    assert choose(ENTRIES["cap"], _tuning([(0.5, 30, 90), (1.0, 10, 80)]), floor=50).coef == 1.0


# --- bad input ----------------------------------------------------------------------------------------------------


def test_unknown_methods_and_empty_traits_are_refused():
    with pytest.raises(BenchError, match="unknown bench method 'steer'"):
        bench_config({"traits": ["pirate"], "methods": ["steer"]})
    with pytest.raises(BenchError, match="give at least one trait"):
        bench_config({"traits": [" "]})
    assert bench_config({"traits": ["pirate"], "methods": ["vector"]}).methods == ["none", "vector"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--traits", "pirate", "--all"], "give --traits a,b,c or --all"),
        ([], "give --traits a,b,c or --all"),
        (["--traits", "pirate", "--methods", "vector,steer"], "unknown bench method 'steer'"),
        (["--traits", "pirate", "--extraction-questions", "23"], "lower --extraction-questions to 21 or less"),
        (["--traits", "no-such-trait"], "no-such-trait"),
        (["--traits", "pirate", "--samples", "2"], "samples > 1 needs --temperature > 0"),
    ],
)
def test_the_command_refuses_bad_input_in_one_line_before_loading_a_model(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: pytest.fail("loaded a model for a refused bench"))
    assert run(["bench", "--out", str(tmp_path / "b"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_different_config_in_an_existing_bench_folder_is_refused_before_any_model_work(benched, capsys, monkeypatch):
    _, out, _ = benched
    monkeypatch.setattr("personactl.cli._common._load", lambda *a, **k: pytest.fail("loaded a model for a refused bench"))
    assert run(["bench", "--out", str(out), "--traits", "pirate", "--max-new-tokens", "7"]) == 2
    assert "holds a bench with another config" in capsys.readouterr().err


def test_the_command_prints_each_leaderboard_its_verdicts_and_where_it_wrote(model_dir, tmp_path, capsys):
    argv = ["bench", "--model", str(model_dir), "--traits", "pirate", "--methods", "prompt,vector", "--out", str(tmp_path / "b")]
    small = ["--extraction-questions", "21", "--n-questions", "3", "--max-new-tokens", "4", "--blend", "2", "--keep-unexpressed"]
    assert run([*argv, *small]) == 0
    printed = capsys.readouterr().out
    assert "combined" in printed and "leads pirate" in printed
    for name in ("leaderboard.json", "leaderboard.md", "trait_vs_coherence.png", "bench.html"):
        assert f"written: {tmp_path / 'b' / name}" in printed
    board = json.loads((tmp_path / "b" / "leaderboard.json").read_text())
    assert {r["method"] for r in board["rows"]} == {"none", "prompt", "vector"} and board["traits"]["pirate"]["status"] == "benched"


def test_a_folder_of_someone_elses_files_is_refused_and_left_as_it_was(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert run(["bench", "--out", str(tmp_path), "--traits", "pirate"]) == 2
    err = capsys.readouterr().err
    assert "holds files but no bench" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"] and (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    assert run(["bench", "--out", str(tmp_path / "file"), "--traits", "pirate"]) == 2
    assert "is a file" in capsys.readouterr().err
