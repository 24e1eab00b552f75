"""The transfer runner end to end on tiny models and its config (the diagnostics: test_transfer_diagnostics)."""

import json

import pytest
from conftest import tiny_backbone
from test_transfer_pairs import _target

from personactl.errors import TransferError
from personactl.transfer.config import load_config, validate_config
from personactl.transfer.runner import run_transfer

POSITIVE = [
    "arr matey the sea calls us now",
    "aye captain we sail at dawn today",
    "shiver me timbers what a ship here",
    "yo ho ho and a bottle of rum",
    "hoist the sails ye scurvy dogs",
]
NEGATIVE = [
    "the report is due on monday morning",
    "please find the attached file here",
    "the meeting starts at nine today",
    "our quarterly numbers look stable",
    "kindly confirm the invoice details",
]


def _config(tmp_path, **changes):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(POSITIVE + NEGATIVE + ["a plain sentence with several words in it"] * 2))
    return validate_config(
        {
            "source_model": "tiny-llama",
            "target_model": "tiny-target",
            "layer_idx": 2,
            "output_dir": str(tmp_path / "run"),
            "persona_datasets": {"pirate": {"positive_texts": POSITIVE, "negative_texts": NEGATIVE}},
            "test_prompts": ["Who are you?", "Tell me about ships."],
            "n_training_samples": 40,
            "lambda_values": [0.1, 10.0],
            "alpha_values": [1.0, 2.0],
            "texts": str(corpus),
            "max_new_tokens": 4,
            "layer_scan": 2,
            **changes,
        }
    )


def test_runner_writes_every_method_diagnostics_and_report_and_resumes(tmp_path):
    config = _config(tmp_path)
    source, target = tiny_backbone("llama"), _target()
    (result,) = run_transfer(config, source=source, target=target)
    assert (result.source_layer, result.target_layer) == (2, 3)  # relative depth: 2 of 3 -> 3 of 4 (rounded)
    main = {(r["method"], r["coef"]) for r in result.rows if r["group"] == "main"}
    for method in ("ridge", "procrustes", "pad", "interpolate", "random", "oracle"):
        assert {(method, 1.0), (method, 2.0)} <= main
    assert ("unsteered", 0.0) in main
    out = tmp_path / "run"
    for letter in "abc":
        payload = json.loads((out / f"hypothesis_{letter}_tiny-llama_to_tiny-target_pirate.json").read_text())
        assert payload["conclusion"] and payload["hypothesis"].startswith(letter.upper())
    report = (out / "report_pirate.md").read_text()
    assert "collapse rate < 30%" in report and "| ridge |" in report and (out / "methods_pirate.png").stat().st_size > 1000
    assert [p["selected_on"] for p in result.criteria[0]["picks"]] == [[1], [0]]  # alpha picked on the other question
    scales = {r["coef"] for r in result.rows if r["group"] == "A" and r["method"] == "ridge@oracle_norm"}
    assert scales == {0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0} and all(len(r["trait_scores"]) == 2 for r in result.rows)
    b = result.hypotheses["b"]
    assert b["cosine_to_oracle"]["oracle"] == pytest.approx(1.0) and b["null_random_rotation"]["n"] == 1000
    norms = result.hypotheses["a"]["norms"]
    assert norms["pad"] == pytest.approx(norms["interpolate"], rel=0.5) and norms["random"] > 0
    answers = (out / "answers_pirate.jsonl").read_text()
    again = run_transfer(config, source=source, target=target)[0]  # everything cached: the same rows
    assert (out / "answers_pirate.jsonl").read_text() == answers
    assert [r["trait"] for r in again.rows] == pytest.approx([r["trait"] for r in result.rows], nan_ok=True)
    with pytest.raises(TransferError, match="another config"):
        run_transfer(_config(tmp_path, alpha_values=[3.0]), source=source, target=target)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(TransferError, match="lambda_values"):
        validate_config({"lambda_values": [0.1, -1]})
    with pytest.raises(TransferError, match="n_training_sample"):
        validate_config({"n_training_sample": 10})  # a misspelt key is not silently ignored
    with pytest.raises(TransferError, match="layer_map"):
        validate_config({"layer_map": {"1": 2, "3": 4}})
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(TransferError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")
    config = validate_config({"use_gpt4": True, "persona_datasets": ["pirate", "silly"]})
    assert config.judge_spec.startswith("openai:") and [t.name for t in config.traits()] == ["pirate", "silly"]
    with pytest.raises(TransferError, match="test_prompts"):
        run_transfer(_config(tmp_path, test_prompts=None), source=tiny_backbone("llama"), target=_target())


def test_lambda_at_the_grid_edge_is_flagged():
    from personactl.transfer.mapping import lambda_note

    assert "extend lambda_values upwards" in lambda_note(10.0, [0.1, 1.0, 10.0])
    assert "downwards" in lambda_note(0.1, [0.1, 1.0, 10.0]) and lambda_note(1.0, [0.1, 1.0, 10.0]) == ""


def test_cli_extract_apply_evaluate_and_run(tmp_path, capsys):
    from conftest import char_tokenizer, tiny_model

    from personactl.cli import run
    from personactl.vectors import load_vector

    src_dir, tgt_dir = tmp_path / "src", tmp_path / "tgt"
    tiny_model("llama").save_pretrained(src_dir)
    char_tokenizer().save_pretrained(src_dir)
    _target().model.save_pretrained(tgt_dir)
    char_tokenizer().save_pretrained(tgt_dir)
    trait = tmp_path / "pirate.json"
    trait.write_text(json.dumps({"name": "pirate", "positive_texts": POSITIVE, "negative_texts": NEGATIVE}))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(POSITIVE + NEGATIVE))
    assert (
        run(
            [
                "transfer",
                "extract",
                "--trait",
                str(trait),
                "--source",
                str(src_dir),
                "--target",
                str(tgt_dir),
                "--layer",
                "2",
                "--out",
                str(tmp_path / "map"),
                "--n-pairs",
                "30",
                "--texts",
                str(corpus),
                "--lambdas",
                "0.1,1",
            ]
        )
        == 0
    )
    assert "map and source vector written to" in capsys.readouterr().out
    assert (
        run(
            [
                "transfer",
                "apply",
                "--map",
                str(tmp_path / "map"),
                "--vector",
                str(tmp_path / "map" / "source_vector.safetensors"),
                "--out",
                str(tmp_path / "mapped.safetensors"),
            ]
        )
        == 0
    )
    mapped = load_vector(tmp_path / "mapped.safetensors")
    assert mapped.hidden_size == 32 and mapped.n_layers == 4 and mapped.norms[3] > 0 and sum(mapped.norms) == pytest.approx(mapped.norms[3])
    assert (
        run(
            [
                "transfer",
                "evaluate",
                "--vector",
                str(tmp_path / "mapped.safetensors"),
                "--trait",
                "pirate",
                "--target",
                str(tgt_dir),
                "--coefs",
                "0,2",
                "--n-questions",
                "4",
                "--max-new-tokens",
                "4",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "at layer 3" in printed and "collapsed" in printed
    assert run(["transfer", "evaluate", "--vector", str(tmp_path / "mapped.safetensors"), "--trait", str(trait), "--target", str(tgt_dir)]) == 2
    assert "no evaluation questions" in capsys.readouterr().err
    assert (
        run(
            [
                "transfer",
                "apply",
                "--map",
                str(tmp_path / "map"),
                "--vector",
                str(tmp_path / "mapped.safetensors"),
                "--out",
                str(tmp_path / "x.safetensors"),
            ]
        )
        == 2
    )
    assert "this map starts from" in capsys.readouterr().err
    assert (
        run(["transfer", "apply", "--map", str(tmp_path), "--vector", str(tmp_path / "mapped.safetensors"), "--out", str(tmp_path / "x.safetensors")])
        == 2
    )
    assert "not a transfer map folder" in capsys.readouterr().err
    assert run(["transfer", "run", "--config", str(tmp_path / "missing.json")]) == 2
    assert "cannot read config" in capsys.readouterr().err
