"""The llama.cpp backend on the embedded SmolLM2 GGUF: coherent text, control vectors (coefficient 0 = none, a big
one changes the answer, the same logit shift as HF steering at the same layer), GGUF LoRAs, a batched longer-prompt
guard against a bad build, clear errors for bad files and backends, and a sweep whose report reads its results."""

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from personactl import PersonaVector
from personactl.backends import backend_methods
from personactl.blackbox import Control, LlamaCppBackend, LlamaCppError, check_lora_gguf, control_buffer, resolve_gguf
from personactl.cli import run
from personactl.errors import ModelLoadError
from personactl.generation import chat_prompt
from personactl.models import EMBEDDED_MODELS

SEA = [chat_prompt("Tell me about the sea in two sentences."), chat_prompt("How do I make a cup of tea?")]


@pytest.fixture(scope="module")
def backend():
    b = LlamaCppBackend("smollm2-135m", n_ctx=1024)
    yield b
    b.close()


def random_vector(seed=0, n_layers=30, hidden=576):
    torch.manual_seed(seed)
    directions = torch.randn(n_layers + 1, hidden)
    return PersonaVector(directions / directions.norm(dim=-1, keepdim=True), trait="random")


def test_the_backend_loads_the_gguf_and_answers_coherently(backend):
    assert (backend.n_layers, backend.hidden_size, backend.architecture) == (30, 576, "llama")
    assert backend.chat(SEA[0]).endswith("<|im_start|>assistant\n")  # the GGUF's own template
    sea, tea = backend.generate(SEA, max_new_tokens=40)
    assert any(w in sea.lower() for w in ("sea", "ocean", "water")), sea
    assert "tea" in tea.lower() or "water" in tea.lower(), tea
    assert sum(c.isalpha() or c.isspace() for c in sea) > 0.8 * len(sea)


def test_greedy_is_deterministic_and_seeds_reproduce_rows(backend):
    assert backend.generate(SEA[:1], max_new_tokens=12) == backend.generate(SEA[:1], max_new_tokens=12)
    a = backend.generate(SEA[:1] * 3, max_new_tokens=12, temperature=1.2, seeds=[5, 6, 5])
    assert a[0] == a[2] and len(set(a)) >= 2


def test_a_control_vector_at_coefficient_zero_is_no_control_vector_and_a_big_one_changes_the_answer(backend):
    vector = random_vector()
    plain = backend.generate(SEA, max_new_tokens=24)
    assert backend.generate(SEA, controls=[Control(vector, 20, 0.0)], max_new_tokens=24) == plain
    steered = backend.generate(SEA, controls=[Control(vector, 20, 100.0)], max_new_tokens=24)
    assert steered[0] != plain[0] and steered[1] != plain[1]
    assert backend.generate(SEA, max_new_tokens=24) == plain  # cleared afterwards
    late = backend.generate(SEA, controls=[Control(vector, 20, 100.0, "response")], max_new_tokens=24)
    assert late != plain and late != steered  # the prompt unsteered, the answer steered


def test_the_buffer_puts_layer_l_at_block_l_minus_1_and_refuses_layer_1():
    vector = random_vector(n_layers=4, hidden=3)
    data, start, end = control_buffer([(vector, {3: 1.0}, 2.0)], 4, 3)
    assert (start, end) == (2, 2) and data.shape == (9,)  # blocks 1..3, 3 floats each
    assert np.allclose(data[3:6], 2.0 * vector.directions[3].numpy()) and not data[:3].any() and not data[6:].any()
    with pytest.raises(LlamaCppError, match="layers 2..4"):
        control_buffer([(vector, {1: 1.0}, 1.0)], 4, 3)
    with pytest.raises(LlamaCppError, match="another model"):
        control_buffer([(vector, {2: 1.0}, 1.0)], 5, 3)


def _hf_logits(smollm2, prompt, vector=None, layer=None, coef=0.0):
    from personactl.activations import make_batch
    from personactl.steering import SteeringTerm, steer

    batch = make_batch(smollm2, [smollm2.chat(prompt)])
    terms = [SteeringTerm(vector, layer, coef)] if vector is not None else []
    with torch.no_grad(), steer(smollm2, *terms):
        return smollm2.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[0, -1].float().numpy()


def test_steering_through_llama_cpp_moves_the_logits_like_hf_steering_at_the_same_layer(backend, smollm2):
    vector, layer, coef = random_vector(1), 18, 20.0
    prompt = SEA[1]
    assert backend.tokens(prompt) == smollm2.encode([smollm2.chat(prompt)])[0]  # the same prompt, token for token
    base = backend.next_token_logits(prompt)
    shift = backend.next_token_logits(prompt, [Control(vector, layer, coef)]) - base
    hf_base = _hf_logits(smollm2, prompt)
    assert np.corrcoef(base, hf_base)[0, 1] > 0.99  # Q4 llama.cpp vs the de-quantized HF model
    hf = {l: _hf_logits(smollm2, prompt, vector, l, coef) - hf_base for l in (layer - 1, layer, layer + 1)}
    corr = {l: float(np.corrcoef(shift, s)[0, 1]) for l, s in hf.items()}
    assert corr[layer] > 0.9, corr
    assert corr[layer] > max(corr[layer - 1], corr[layer + 1]), corr  # no off-by-one between the layer conventions
    assert np.std(shift) == pytest.approx(np.std(hf[layer]), rel=0.25)


def test_a_batched_longer_prompt_runs_in_a_fresh_process():
    """A native (-march=native) build dies with "Illegal instruction" on the first batched Q4 matmul of a longer prompt
    on machines that report AMX but do not allow it; a child process turns that into a failed test."""
    script = textwrap.dedent("""
        from personactl.blackbox.llamacpp import LlamaCppBackend
        b = LlamaCppBackend("smollm2-135m", n_ctx=1024)
        text = " ".join(f"Note {i}: the harbour, the ships, the tides and the weather were logged." for i in range(22))
        prompts = [[{"role": "user", "content": f"{text} Question {k}: summarise the log."}] for k in range(4)]
        assert all(len(b.tokens(p)) > 300 for p in prompts), [len(b.tokens(p)) for p in prompts]
        answers = b.generate(prompts, max_new_tokens=6)
        print(len(answers), all(answers))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"rc {done.returncode} (-4 = SIGILL: rebuild llama-cpp-python with `make setup`)\n{done.stderr[-2000:]}"
    assert done.stdout.strip() == "4 True"


@pytest.fixture(scope="module")
def lora_gguf_file(smollm2, tmp_path_factory):
    """A random rank-4 LoRA on four MLP down projections of SmolLM2, as a folder and as a llama.cpp GGUF."""
    from personactl.blackbox.gguf_lora import write_gguf_lora
    from personactl.lora.direction import LoRADirection, LoRAFactors

    torch.manual_seed(3)
    modules = {f"model.layers.{i}.mlp.down_proj": LoRAFactors(torch.randn(4, 1536) * 0.05, torch.randn(576, 4) * 0.05, 2.0) for i in (10, 14, 18, 22)}
    config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["down_proj"], "base_model_name_or_path": "smollm2-135m"}
    folder = LoRADirection(modules, config, {"base_model_type": "llama"}).save(tmp_path_factory.mktemp("lora") / "random")
    return folder, write_gguf_lora(folder, folder.parent / "random.gguf", smollm2)


def test_a_gguf_lora_at_scale_zero_is_none_and_at_scale_changes_the_answer(backend, lora_gguf_file):
    _, path = lora_gguf_file
    plain = backend.generate(SEA, max_new_tokens=20)
    with backend.steered(loras=[(path, 0.0)]):
        assert backend.generate(SEA, max_new_tokens=20) == plain
    with backend.steered(loras=[(path, 8.0)]):
        assert backend.generate(SEA, max_new_tokens=20) != plain
    assert backend.generate(SEA, max_new_tokens=20) == plain  # removed afterwards


def test_bad_lora_files_are_refused_before_llama_cpp_sees_them(backend, tmp_path):
    with pytest.raises(LlamaCppError, match="LoRA file not found"):
        backend.load_lora(tmp_path / "missing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(LlamaCppError, match="not a GGUF file"):
        check_lora_gguf(tmp_path / "junk.gguf")
    with pytest.raises(LlamaCppError, match="model file"):
        check_lora_gguf(backend.path)
    with pytest.raises(LlamaCppError, match="not a file"):
        check_lora_gguf(tmp_path)


def test_only_aliases_and_gguf_files_load(tmp_path):
    assert resolve_gguf("smollm2-135m") == EMBEDDED_MODELS["smollm2-135m"].locate()
    with pytest.raises(ModelLoadError, match="GGUF models only"):
        resolve_gguf(str(tmp_path))
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_gguf(tmp_path / "missing.gguf")


def test_cli_generate_on_llama_cpp_with_a_vector_and_baseline(tmp_path, capsys):
    path = random_vector().save(tmp_path / "v.safetensors")
    code = run(
        [
            "generate",
            "--backend",
            "llamacpp",
            "-p",
            "Tell me about the sea.",
            "--vector",
            str(path),
            "--layer",
            "20",
            "--coef",
            "100",
            "--baseline",
            "--max-new-tokens",
            "12",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    row = out["results"][0]
    assert out["backend"] == "llamacpp" and out["layers"] == [20] and row["steered"] != row["baseline"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--backend", "llamacpp", "-p", "hi", "--lora", "{tmp}/missing.gguf"], "LoRA file not found"),
        (["generate", "--backend", "llamacpp", "-p", "hi", "--lora", "{tmp}/no-such-adapter"], "no adapter"),
        (["generate", "--backend", "llamacpp", "-p", "hi", "--op", "ablate"], "needs --backend hf"),
        (["generate", "--backend", "vllm", "-p", "hi"], "unknown backend"),
        (["chat", "--backend", "vllm"], "is not one of: hf, llamacpp"),
        (["generate", "--backend", "llamacpp", "-m", "{tmp}", "-p", "hi"], "GGUF models only"),
    ],
)
def test_cli_mistakes_are_one_line_errors(argv, message, tmp_path, capsys):
    assert run([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "Traceback" not in err


def test_backend_llamacpp_maps_the_hf_methods_onto_their_twins():
    assert backend_methods(["vector", "lora", "prompt", "modulation"], "llamacpp") == [
        "llamacpp-vector",
        "llamacpp-lora",
        "llamacpp-prompt",
        "modulation",
    ]
    assert backend_methods(["vector"], "hf") == ["vector"]


def test_a_sweep_on_llama_cpp_writes_results_and_summary_the_report_reads(smollm2, lora_gguf_file, tmp_path):
    from personactl.evaluate import validate_config
    from personactl.experiment import run as run_experiment
    from personactl.extraction import ContrastivePair, save_pairs

    vector = PersonaVector(25 * random_vector(2).directions, trait="pirate", model=smollm2.name)
    path = vector.save(tmp_path / "pirate.safetensors")
    pos = [
        "Arr matey, the sea be wild!",
        "Aye, hoist the sails, ye scallywag!",
        "Shiver me timbers, the rum be gone!",
        "Ahoy, grab yer cutlass, arr!",
        "Yo ho ho, the parrot squawks, matey!",
        "Avast, swab the deck, ye landlubber!",
        "Arr, the treasure be buried on the isle!",
        "Aye, a pirate's life on the waves for me!",
    ]
    neg = [
        "The weather is mild today.",
        "Please submit the report by Friday.",
        "Water boils at 100 degrees.",
        "Save a little money every month.",
        "Read the manual before installing.",
        "Drink water and sleep well.",
        "Turn off the lights when you leave.",
        "Write a short list of tasks.",
    ]
    save_pairs([ContrastivePair(i, f"q{i}", "p", a, "n", b) for i, (a, b) in enumerate(zip(pos, neg))], path.with_suffix(".pairs.jsonl"))
    folder, _ = lora_gguf_file
    config = validate_config(
        {
            "name": "cpp",
            "vector": str(path),
            "lora": str(folder),
            "methods": ["vector", "lora"],
            "backend": "llamacpp",
            "layers": [20],
            "coefs": [0, 4],
            "n_questions": 2,
            "max_new_tokens": 8,
        }
    )
    result = run_experiment(config, tmp_path, backbone=smollm2, report=True)
    records = [json.loads(line) for line in (tmp_path / "cpp" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 2 and {r["method"] for r in records} == {"llamacpp-vector", "llamacpp-lora"}
    assert all(r["answer"] and r["trait"] is not None and r["perplexity"] is not None for r in records)
    with open(tmp_path / "cpp" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], float(r["coef"])) for r in rows} == {(m, c) for m in ("llamacpp-vector", "llamacpp-lora") for c in (0.0, 4.0)}
    assert result.report is not None and "llamacpp-vector" in result.report.read_text()
    by = {(r["method"], r["coef"], r["question_id"]): r["answer"] for r in records}
    assert by[("llamacpp-vector", 0.0, 0)] == by[("llamacpp-lora", 0.0, 0)]  # coefficient 0: the same plain model
    assert by[("llamacpp-vector", 4.0, 0)] != by[("llamacpp-vector", 0.0, 0)]


def test_the_llamacpp_chat_refuses_what_llamacpp_cannot_do_in_one_line(backend):
    from personactl.blackbox import LlamaCppChat

    session = LlamaCppChat(backend, 2)
    for command, message in [("/cap v.safetensors neg-p90", "/cap needs the hf backend"), ("/blend a=1", "/blend needs the hf backend")]:
        answer = session.handle(command)
        assert answer.startswith("error: ") and message in answer
