"""Layer choice, and the `compare` and `demo` commands end to end on a tiny model."""

import json

from personactl.cli import run
from personactl.layer_selection import LayerScore, choose_layer, probe_questions
from personactl.traits import load_trait


def _row(layer, effect, coherence, d=0.0):
    return LayerScore(layer, auroc=0.5, cohens_d=d, effect=effect, coherence=coherence)


def test_choose_layer_takes_the_largest_effect_among_coherent_layers():
    rows = [_row(1, 40.0, 30.0), _row(2, 25.0, 80.0), _row(3, 10.0, 95.0), LayerScore(4, 0.9, 3.0)]
    layer, reason = choose_layer(rows)
    assert layer == 2 and "+25.0" in reason and "coherence 80 >= 50" in reason


def test_choose_layer_without_a_coherent_layer_says_so():
    layer, reason = choose_layer([_row(1, 40.0, 30.0), _row(2, 25.0, 20.0)])
    assert layer == 1 and "no layer kept coherence" in reason


def test_choose_layer_without_measured_effects_falls_back_to_separation():
    layer, reason = choose_layer([LayerScore(1, 0.6, 0.4), LayerScore(2, 0.9, 2.5)])
    assert layer == 2 and "Cohen's d" in reason


def test_probe_questions_are_never_the_scored_evaluation_questions():
    trait = load_trait("pirate")
    for used in (None, 4, 12, len(trait.questions)):
        questions, note = probe_questions(trait.questions, used)
        assert len(questions) == 4 and not set(questions) & set(trait.eval_questions)
        assert "never scored by the sweep" in note
    unused, note = probe_questions(trait.questions, 12)
    assert unused == trait.questions[12:16] and "not used to extract" in note


def test_auto_layer_is_measured_on_extraction_questions(model_dir, tmp_path, capsys):
    code = run(
        [
            "sweep",
            "--model",
            str(model_dir),
            "--trait",
            "pirate",
            "--out",
            str(tmp_path),
            "--name",
            "s",
            "--coefs=0,1",
            "--layers",
            "auto",
            "--n-questions",
            "2",
            "--max-new-tokens",
            "4",
        ]
    )
    assert code == 0, capsys.readouterr().err
    probe = json.loads((tmp_path / "s" / "layers.json").read_text())["probe"]
    n = len(load_trait("pirate").questions)  # every extraction question made the vector: the last four probe
    assert probe.startswith(f"measured on extraction questions {n - 3}-{n}")
    assert probe in (tmp_path / "s" / "report.html").read_text()


def test_compare_activation_and_lora_steering(model_dir, tmp_path, capsys):
    lora_dir = tmp_path / "lora"
    assert (
        run(
            [
                "lora",
                "extract",
                "--model",
                str(model_dir),
                "--trait",
                "pirate",
                "--out",
                str(lora_dir),
                "--rank",
                "2",
                "--alpha",
                "4",
                "--max-steps",
                "2",
                "--n-questions",
                "1",
                "--max-new-tokens",
                "4",
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    capsys.readouterr()
    code = run(
        [
            "compare",
            "--lora",
            str(lora_dir / "diff"),
            "--model",
            str(model_dir),
            "--coefs=-1,0,1",
            "--layers",
            "2",
            "--n-questions",
            "2",
            "--name",
            "cmp",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "latency" in printed and "dW shift vs persona vector" in printed
    records = [json.loads(line) for line in (tmp_path / "cmp" / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in records} == {"vector", "lora"} and len(records) == 2 * 3 * 2
    assert (tmp_path / "cmp" / "report.html").is_file()


def test_demo_runs_the_main_job_and_states_its_verdict(model_dir, tmp_path, capsys, monkeypatch):
    from personactl import demo

    full = demo.demo_config
    monkeypatch.setattr(
        demo, "demo_config", lambda trait: full(trait).model_copy(update={"n_questions": 2, "extraction_questions": 2, "max_new_tokens": 4})
    )  # the same job, smaller
    assert run(["demo", "--model", str(model_dir), "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for trait in ("pirate", "silly"):
        assert (tmp_path / f"demo-{trait}" / "report.html").is_file()
    from personactl.verdicts import CLEAR, COHERENCE_LOSS, DISAGREES, JUDGE_BLIND, NO_EFFECT

    verdicts = [line for line in printed.splitlines() if line.startswith("verdict: vector @ layer")]
    assert len(verdicts) == 2
    assert all(any(v in line for v in (CLEAR, COHERENCE_LOSS, NO_EFFECT, JUDGE_BLIND, DISAGREES)) for line in verdicts)
    assert printed.count("expressibility: pirate: ") == 1 and printed.count("expressibility: silly: ") == 1
    for trait in ("pirate", "silly"):  # the report shows the same verdict at the top
        assert verdicts[0 if trait == "pirate" else 1].removeprefix("verdict: ") in _html_text(tmp_path / f"demo-{trait}" / "report.html")


def _html_text(path):
    import html

    return html.unescape(path.read_text())


def test_extract_check_prints_the_verdict_and_writes_nothing(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = run(["extract", "--model", str(model_dir), "--trait", "pirate", "--check", "--n-questions", "2", "--max-new-tokens", "4"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    line = next(l for l in printed.splitlines() if l.startswith("expressibility: pirate: "))
    assert "too few answers to say" in line and "at least 5 questions" in line  # 2 questions cannot decide
    assert "judge AUROC" in line and "10 contrastive pairs; nothing written" in printed
    assert list(tmp_path.iterdir()) == []


def test_extract_stores_the_verdict_in_the_vector(model_dir, tmp_path, capsys):
    from personactl import load_vector

    path = tmp_path / "v.safetensors"
    assert run(["extract", "--model", str(model_dir), "--trait", "pirate", "--n-questions", "2", "--max-new-tokens", "4", "--out", str(path)]) == 0
    stored = load_vector(path).extra["expressibility"]
    assert stored["line"] in capsys.readouterr().out and 0.0 <= stored["auroc"] <= 1.0
    assert len(load_vector(path).extra["projections"]["pos"]) == stored["n_pairs"]
    norms = load_vector(path).extra["hidden_norms"]  # what parameter modulation needs, with no second pass
    assert len(norms) == load_vector(path).n_layers + 1 and all(n > 0 for n in norms)


def test_finetune_with_the_persona_direction_ablated_during_training(model_dir, vector_file, tmp_path, capsys):
    """Preventative steering by ablation: the direction is projected out of the layer's output while training."""
    import json

    from personactl.cli import run

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": "an answer"}) + "\n" for i in range(4)))
    out = tmp_path / "ft"
    assert (
        run(
            [
                "finetune",
                "--data",
                str(data),
                "--out",
                str(out),
                "--model",
                str(model_dir),
                "--steer-vector",
                str(vector_file),
                "--steer-layer",
                "2",
                "--steer-op",
                "ablate",
                "--max-steps",
                "1",
                "--rank",
                "2",
                "--alpha",
                "4",
            ]
        )
        == 0
    )
    card = json.loads((out / "persona.json").read_text())
    assert card["preventative"]["steering"] == [{"trait": "random", "layers": [2], "coef": 1.0, "op": "ablate"}]
