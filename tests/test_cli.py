import json
import pickle

import pytest
import torch

from personactl import PersonaVector
from personactl.cli import run


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_traits_list_and_show(capsys):
    assert run(["traits", "list"]) == 0
    assert "pirate" in capsys.readouterr().out
    assert run(["traits", "show", "pirate"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "pirate"


def test_generate_with_baseline_as_json(model_dir, vector_file, capsys):
    code = run(
        [
            "generate",
            "--model",
            str(model_dir),
            "--vector",
            str(vector_file),
            "--layer",
            "2",
            "--coef",
            "8",
            "--prompt",
            "hi",
            "--baseline",
            "--json",
            "--max-new-tokens",
            "4",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    row = result["results"][0]
    assert set(row) == {"prompt", "steered", "baseline"} and result["layers"] == [2]


def test_monitor_prints_every_layer(model_dir, vector_file, capsys):
    assert run(["monitor", "--model", str(model_dir), "--vector", str(vector_file), "--prompt", "hi", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["layers"] == [1, 2, 3] and len(result["projections"][0]) == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--model", "no-such-alias!", "--prompt", "hi"], "not a model alias"),
        (["generate", "--model", "{model}", "--vector", "{vector}", "--layer", "9", "--prompt", "hi"], "layer 9 is out of range"),
        (["generate", "--model", "{model}", "--vector", "{tmp}/missing.safetensors", "--layer", "1", "--prompt", "hi"], "not found"),
        (["generate", "--model", "{model}", "--vector", "{tmp}/corrupt.safetensors", "--layer", "1", "--prompt", "hi"], "not a readable"),
        (["generate", "--model", "{model}", "--vector", "{tmp}/evil.pt", "--layer", "1", "--prompt", "hi"], "refusing"),
        (["generate", "--model", "{model}", "--vector", "{tmp}/wide.safetensors", "--layer", "1", "--prompt", "hi"], "hidden size"),
        (["extract", "--model", "{model}", "--trait", "{tmp}/empty.json"], "invalid trait"),
        (["extract", "--model", "{model}", "--trait", "nonexistent"], "no trait"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(argv, message, model_dir, vector_file, tmp_path, capsys):
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    (tmp_path / "empty.json").write_text(json.dumps({"name": "empty", "instructions": [], "questions": []}))
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"f": print}, fh)
    PersonaVector(torch.zeros(4, 64)).save(tmp_path / "wide.safetensors")
    filled = [a.format(model=model_dir, vector=vector_file, tmp=tmp_path) for a in argv]
    assert run(filled) == 2
    err = _error_line(capsys)
    assert message in err and len(err.splitlines()) == 1


def test_vector_without_layer_is_a_usage_error(model_dir, vector_file, capsys):
    assert run(["generate", "--model", str(model_dir), "--vector", str(vector_file), "--prompt", "hi"]) == 2
    assert "--layer" in capsys.readouterr().err


def test_sweep_layers_and_report_end_to_end(model_dir, tmp_path, capsys):
    common = ["--model", str(model_dir), "--trait", "pirate", "--out", str(tmp_path)]
    code = run(
        [
            "sweep",
            *common,
            "--name",
            "s",
            "--coefs=-1,0,1",
            "--layers",
            "auto",
            "--n-questions",
            "2",
            "--max-new-tokens",
            "4",
            "--methods",
            "vector,prompt",
        ]
    )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    run_dir = tmp_path / "s"
    for name in ("config.json", "results.jsonl", "summary.csv", "layers.json", "report.html", "vector.safetensors"):
        assert (run_dir / name).is_file(), name
        assert str(run_dir / name) in printed or name not in ("results.jsonl", "summary.csv", "report.html")
    assert "chosen" in printed
    config = json.loads((run_dir / "config.json").read_text())
    assert config["layer_selection"]["chosen"] in range(1, 4) and "heldout_accuracy" in config["judge"]
    assert len((run_dir / "results.jsonl").read_text().splitlines()) == 2 * 3 * 2  # (vector@chosen + prompt) x coefs x questions

    assert run(["layers", *common, "--name", "l"]) == 0
    assert "layers.png" in capsys.readouterr().out and (tmp_path / "l" / "figures" / "layers.png").is_file()
    assert run(["report", str(run_dir)]) == 0
    assert "report.html" in capsys.readouterr().out


def test_sweep_with_a_different_config_in_the_same_run_is_refused(model_dir, tmp_path, capsys):
    common = [
        "sweep",
        "--model",
        str(model_dir),
        "--out",
        str(tmp_path),
        "--name",
        "s",
        "--n-questions",
        "1",
        "--max-new-tokens",
        "2",
        "--layers",
        "1",
    ]
    assert run([*common, "--coefs=0,1"]) == 0
    capsys.readouterr()
    assert run([*common, "--coefs=0,2"]) == 2
    assert "coefs differ" in _error_line(capsys)


def test_report_on_a_folder_without_results(tmp_path, capsys):
    assert run(["report", str(tmp_path)]) == 2
    assert "results.jsonl" in _error_line(capsys)


def test_lora_extract_and_svd(model_dir, tmp_path, capsys):
    out_dir = tmp_path / "lora"
    code = run(
        [
            "lora",
            "extract",
            "--model",
            str(model_dir),
            "--trait",
            "pirate",
            "--out",
            str(out_dir),
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
    assert code == 0, capsys.readouterr().err
    assert str(out_dir / "diff") in capsys.readouterr().out
    assert json.loads((out_dir / "diff" / "adapter_config.json").read_text())["r"] == 4
    assert run(["lora", "svd", str(out_dir / "diff"), "--top-k", "2"]) == 0
    printed = capsys.readouterr().out
    assert "effective rank" in printed and (out_dir / "diff" / "svd.png").is_file()
    assert run(["lora", "svd", str(tmp_path)]) == 2
    assert "not a PEFT adapter folder" in _error_line(capsys)


def test_lora_drift_correlates_checkpoints_with_scores(model_dir, tmp_path, capsys):
    from personactl.lora.direction import LoRADirection

    out_dir = tmp_path / "lora"
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
                str(out_dir),
                "--rank",
                "2",
                "--alpha",
                "4",
                "--max-steps",
                "2",
                "--n-questions",
                "3",
                "--max-new-tokens",
                "4",
                "--batch-size",
                "4",
                "--lr",
                "1e-2",
            ]
        )
        == 0
    )
    direction = LoRADirection.load(out_dir / "diff")
    assert all(f.B.abs().sum() > 0 for f in direction.modules.values())
    rows = ["checkpoint,score"]
    for i, coef in enumerate([-1.0, 0.5, 2.0]):  # checkpoints that are exactly coef * dW, scored in the same order
        scaled = LoRADirection({n: type(f)(f.A, coef * f.B, f.scaling) for n, f in direction.modules.items()}, direction.config, direction.metadata)
        scaled.save(tmp_path / "ckpts" / f"c{i}")
        rows.append(f"c{i},{10 * (i + 1)}")
    (tmp_path / "scores.csv").write_text("\n".join(rows) + "\n")
    capsys.readouterr()
    assert (
        run(
            [
                "lora",
                "drift",
                "--model",
                str(model_dir),
                "--direction",
                str(out_dir / "diff"),
                "--checkpoints",
                str(tmp_path / "ckpts"),
                "--scores",
                str(tmp_path / "scores.csv"),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "Spearman rho = 1.000" in printed and "c2" in printed
    (tmp_path / "bad.csv").write_text("checkpoint,score\nc0,high\n")
    assert (
        run(
            [
                "lora",
                "drift",
                "--model",
                str(model_dir),
                "--direction",
                str(out_dir / "diff"),
                "--checkpoints",
                str(tmp_path / "ckpts"),
                "--scores",
                str(tmp_path / "bad.csv"),
            ]
        )
        == 2
    )
    assert "line 2" in _error_line(capsys)


def test_adapter_train_list_show_merge(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PERSONACTL_ADAPTERS", str(tmp_path / "registry"))
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"arr {i}"}) + "\n" for i in range(10)))
    assert run(["adapter", "train", "--model", str(model_dir), "--data", str(data), "--name", "captain", "--rank", "2", "--max-steps", "1"]) == 0
    printed = capsys.readouterr().out
    assert "validation loss" in printed and str(tmp_path / "registry" / "captain") in printed
    assert run(["adapter", "list"]) == 0 and "captain" in capsys.readouterr().out
    assert run(["adapter", "show", "captain"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "captain"
    assert run(["adapter", "merge", "captain", "--model", str(model_dir), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "config.json").is_file()
    assert run(["adapter", "show", "nobody"]) == 2
    assert "no adapter 'nobody'" in _error_line(capsys)
    data.write_text('{"instruction": "q"}\n')
    assert run(["adapter", "train", "--model", str(model_dir), "--data", str(data), "--name", "broken"]) == 2
    assert "line 1: field 'output'" in _error_line(capsys)
    assert run(["adapter", "train", "--model", str(model_dir), "--data", str(data), "--name", "x", "--grad-accum", "0"]) == 2
    assert "grad_accum must be at least 1" in _error_line(capsys)
    assert run(["adapter", "train", "--model", str(model_dir), "--data", str(data), "--name", "x", "--quantize", "3bit"]) == 2
    assert "use 4bit or 8bit" in _error_line(capsys)


def test_adapter_blend_and_sweep_method(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PERSONACTL_ADAPTERS", str(tmp_path / "registry"))
    for word in ("arr", "sir"):
        data = tmp_path / f"{word}.jsonl"
        data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"{word} {i}"}) + "\n" for i in range(10)))
        assert run(["adapter", "train", "--model", str(model_dir), "--data", str(data), "--name", word, "--rank", "2", "--max-steps", "1"]) == 0
    assert run(["adapter", "blend", "arr=0.5,sir=-0.5", "--name", "mix"]) == 0
    assert "rank 4" in capsys.readouterr().out
    assert run(["adapter", "blend", "arr=lots", "--name", "bad"]) == 2
    capsys.readouterr()
    assert (
        run(
            [
                "sweep",
                "--model",
                str(model_dir),
                "--out",
                str(tmp_path),
                "--name",
                "s",
                "--methods",
                "adapter,prompt",
                "--adapter",
                "mix",
                "--coefs=0,1",
                "--n-questions",
                "1",
                "--max-new-tokens",
                "2",
                "--layers",
                "1",
            ]
        )
        == 0
    )
    lines = (tmp_path / "s" / "results.jsonl").read_text().splitlines()
    assert {json.loads(l)["method"] for l in lines} == {"adapter", "prompt"}


def test_chat_combines_personas_and_vectors(model_dir, vector_file, tmp_path, capsys, monkeypatch):
    import io

    monkeypatch.setenv("PERSONACTL_ADAPTERS", str(tmp_path / "registry"))
    for word in ("arr", "sir"):
        data = tmp_path / f"{word}.jsonl"
        data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": f"{word} {i}"}) + "\n" for i in range(10)))
        assert run(["adapter", "train", "--model", str(model_dir), "--data", str(data), "--name", word, "--rank", "2", "--max-steps", "1"]) == 0
    capsys.readouterr()
    script = (
        "hello\n/persona sir\nhi\n/blend arr=0.5,sir=0.5\n/vector " + str(vector_file) + " 2 1\nyo\n/blend arr=x\n/persona nobody\n/bogus\n/reset\n"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    assert run(["chat", "--model", str(model_dir), "--adapter", "arr", "--max-new-tokens", "3"]) == 0
    printed = capsys.readouterr().out
    for expected in (
        "persona arr",
        "persona sir",
        "exact blend, rank 4",
        "at layer 1, coef 2",
        "is not NAME=WEIGHT",
        "no adapter 'nobody'",
        "unknown command /bogus",
        "conversation cleared",
    ):
        assert expected in printed, expected
