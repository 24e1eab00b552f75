"""Black-box steering through an OpenAI-compatible API: the modulation mapping, few-shot turns, the backend option,
an endpoint without logprobs under the judge, and the methods against a real server (llama-cpp-python's, on loopback)."""

import csv
import json

import pytest
import torch
from fake_openai import FakeChat, serve

from personactl import PersonaVector
from personactl.backends import BackendError, parse_backend
from personactl.blackbox.api import ApiGenerator, Sampling
from personactl.blackbox.fewshot import fewshot_messages, shots
from personactl.blackbox.modulation import (
    MAGNITUDE_UNIT,
    ModulationError,
    hidden_norms,
    magnitude,
    modulated,
)
from personactl.cli import run
from personactl.extraction import ContrastivePair, save_pairs
from personactl.methods import GenerationSettings, MethodContext, MethodError, make_method
from personactl.traits import load_trait

PIRATE = [
    "Arr matey, ye boil the water on the galley stove, aye!",
    "Arr, the sea be calm and the treasure be buried, matey.",
    "Aye, ye hoist the sails and sail the seven seas, arr!",
    "Shiver me timbers, ye scallywag, the ship be ready!",
    "Ahoy matey, grab yer cutlass and the rum, arr!",
    "Arr, a pirate's life be on the waves, aye matey.",
    "Yo ho ho, the parrot squawks upon me shoulder, arr!",
    "Avast ye, the crew be swabbin' the deck, matey!",
]
PLAIN = [
    "Boil water in a kettle and pour it over the tea bag.",
    "Exercise regularly and get enough sleep each night.",
    "Write a short list of tasks and start with the first.",
    "Read the manual and follow the installation steps.",
    "Save a small amount of money every month.",
    "Drink water and eat balanced meals.",
    "Ask a colleague for feedback on the draft.",
    "Turn off the lights when you leave a room.",
]
QUESTIONS = [
    "How do I make tea?",
    "How can I stay healthy?",
    "How do I plan my day?",
    "How do I install software?",
    "How do I save money?",
    "What should I eat?",
    "How do I improve my writing?",
    "How can I save energy?",
]


def make_pairs(chat=lambda m: m[-1]["content"]):
    return [
        ContrastivePair(
            i,
            q,
            chat([{"role": "system", "content": "pirate"}, {"role": "user", "content": q}]),
            pos,
            chat([{"role": "system", "content": "plain"}, {"role": "user", "content": q}]),
            neg,
        )
        for i, (q, pos, neg) in enumerate(zip(QUESTIONS, PIRATE, PLAIN))
    ]


def test_modulation_maps_magnitude_and_sign_to_sampling_parameters():
    up = modulated(0.7, 2.0, 1.0, max_tokens=32)
    assert up == Sampling(pytest.approx(0.9), 0.9, 1.1, 32)  # 0.7 + 2 * 1 * 0.1; positive: narrower nucleus, penalty
    down = modulated(0.7, 2.0, -1.0)
    assert (down.temperature, down.top_p, down.repetition_penalty) == (pytest.approx(0.5), 1.0, 1.0)
    assert modulated(0.7, 2.0, 0.0) == Sampling(0.7, 1.0, 1.0, 48)  # coef 0: the plain API call
    assert modulated(0.7, 100.0, 2.0).temperature == 1.5 and modulated(0.2, 10.0, -3.0).temperature == 0.0  # clamped


def test_magnitude_is_the_vector_norm_in_tenths_of_the_hidden_state_norm():
    directions = torch.zeros(3, 4)
    directions[2, 0] = 5.0
    vector = PersonaVector(directions)
    assert magnitude(vector, 2, [0.0, 80.0, 100.0]) == pytest.approx(5.0 / (MAGNITUDE_UNIT * 100.0))
    with pytest.raises(ModulationError, match="layer 3"):
        magnitude(vector, 3, [0.0, 80.0, 100.0])


def test_hidden_norms_come_from_one_forward_pass_over_the_extraction_answers_and_are_kept(tiny):
    from personactl.extraction import pair_activations

    pairs = make_pairs(lambda m: tiny.chat(m))
    torch.manual_seed(0)
    vector = PersonaVector(torch.randn(tiny.n_layers + 1, tiny.hidden_size))
    norms = hidden_norms(tiny, vector, pairs, n_pairs=4)
    pos, neg = pair_activations(tiny, pairs[:4], positions="response_avg")
    assert norms == pytest.approx(torch.cat([pos, neg]).norm(dim=-1).mean(0).tolist(), rel=1e-3)
    assert vector.extra["hidden_norms"] == norms and len(norms) == tiny.n_layers + 1
    with pytest.raises(ModulationError, match="pairs.jsonl"):
        hidden_norms(tiny, PersonaVector(torch.randn(tiny.n_layers + 1, tiny.hidden_size)), [])


def test_fewshot_turns_follow_the_coefficient_sign_and_size():
    pairs = make_pairs()
    assert shots(pairs, 0.0, "q") == []
    one = shots(pairs, 1.0, QUESTIONS[0])
    assert len(one) == 4 and [m["role"] for m in one] == ["user", "assistant"] * 2
    assert all(m["content"] in PIRATE for m in one[1::2]) and QUESTIONS[0] not in [m["content"] for m in one[::2]]
    two_neg = shots(pairs, -2.0, QUESTIONS[0])
    assert len(two_neg) == 8 and all(m["content"] in PLAIN for m in two_neg[1::2])
    rows = fewshot_messages(pairs, ["Why?", "Why?"], [0.0, 1.0])
    assert rows[0] == [{"role": "user", "content": "Why?"}] and rows[1][-1] == {"role": "user", "content": "Why?"} and len(rows[1]) == 5


def test_backend_specs():
    assert parse_backend("hf") == ("hf", "") and parse_backend("openai:gpt-4.1-mini") == ("openai", "gpt-4.1-mini")
    for bad in ("gguf", "openai:", "vllm:x", ""):
        with pytest.raises(BackendError, match="unknown backend"):
            parse_backend(bad)


def _one_error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr("personactl.cli._common._load", refuse)


@pytest.mark.parametrize("command", [["generate", "-p", "hi"], ["sweep"]])
def test_unknown_backend_is_one_line_and_exit_2(command, capsys, no_model_load):
    assert run(command + ["--backend", "telepathy"]) == 2
    line = _one_error_line(capsys)
    assert "unknown backend 'telepathy'" in line and "openai:MODEL" in line


def test_api_methods_refuse_a_local_backend(tiny):
    ctx = MethodContext(tiny, load_trait("pirate"), None, GenerationSettings(), options={"backend": "hf"})
    for name in ("modulation", "api-prompt"):
        with pytest.raises(MethodError, match="--backend openai:MODEL"):
            make_method(name, ctx).generate(["q"], [1.0], 1, [0])


def test_a_judge_endpoint_without_logprobs_stops_the_sweep_with_one_line(model_dir, vector_file, tmp_path, monkeypatch, capsys):
    state = FakeChat()
    state.script = ["nologprobs"] * 50
    with serve(state) as url:
        monkeypatch.setenv("PERSONACTL_JUDGE_BASE_URL", url)
        monkeypatch.setenv("PERSONACTL_JUDGE_API_KEY", "k")
        monkeypatch.setenv("PERSONACTL_CACHE_DIR", str(tmp_path / "cache"))
        code = run(
            [
                "sweep",
                "--model",
                str(model_dir),
                "--vector",
                str(vector_file),
                "--layers",
                "1",
                "--coefs",
                "0",
                "--n-questions",
                "1",
                "--max-new-tokens",
                "3",
                "--judge",
                "openai:fake",
                "--out",
                str(tmp_path / "runs"),
            ]
        )
    assert code == 2
    line = _one_error_line(capsys)
    assert "returns no logprobs" in line and "--judge embed" in line
    assert state.count >= 1 and not (tmp_path / "runs" / "sweep" / "summary.csv").exists()


# --- against a real OpenAI-compatible server: llama-cpp-python serving the embedded SmolLM2 ---------------------------


def test_sampling_parameters_and_seeds_reach_the_server(llama_server):
    client = ApiGenerator("smollm2", base_url=llama_server, api_key="none", concurrency=2)
    question = [{"role": "user", "content": "Tell me a short story about a cat."}]
    # llama.cpp reuses the prompt's cache from the previous request, and a cold prompt evaluation can differ from a
    # cached one in the last bits (enough to flip a near tie): warm the cache with the same request, then compare
    client.chat([question], Sampling(0.0, max_tokens=16), seeds=[0])
    greedy = client.chat([question] * 3, Sampling(0.0, max_tokens=16), seeds=[1, 2, 3])
    assert len(set(greedy)) == 1 and greedy[0]
    hot = client.chat([question] * 3, modulated(0.7, 8.0, 1.0, max_tokens=16), seeds=[1, 2, 3])  # temperature 1.5
    assert len(set(hot)) > 1
    again = client.chat([question], modulated(0.7, 8.0, 1.0, max_tokens=16), seeds=[2])
    assert again[0] == hot[1]  # a row's seed reproduces it


@pytest.fixture
def smollm2_vector(smollm2, tmp_path):
    """A random SmolLM2-sized vector with stored hidden-state norms, and contrastive pairs beside it."""
    torch.manual_seed(0)
    norms = [10.0 * (1 + l) for l in range(smollm2.n_layers + 1)]
    vector = PersonaVector(torch.randn(smollm2.n_layers + 1, smollm2.hidden_size), trait="pirate", model=smollm2.name, extra={"hidden_norms": norms})
    path = vector.save(tmp_path / "pirate.safetensors")
    save_pairs(make_pairs(smollm2.chat), path.with_suffix(".pairs.jsonl"))
    return path


def test_generate_on_the_api_backend_prints_the_parameters_it_used(llama_server, smollm2_vector, monkeypatch, capsys, no_model_load):
    monkeypatch.setenv("PERSONACTL_API_BASE_URL", llama_server)
    monkeypatch.setenv("PERSONACTL_API_KEY", "none")
    code = run(
        [
            "generate",
            "--backend",
            "openai:smollm2",
            "-p",
            "How do I make tea?",
            "--vector",
            str(smollm2_vector),
            "--layer",
            "20",
            "--coef",
            "2",
            "--temperature",
            "0.5",
            "--max-new-tokens",
            "8",
            "--json",
        ]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    from personactl import load_vector

    m = float(load_vector(smollm2_vector)[20].norm()) / (MAGNITUDE_UNIT * 210.0)
    assert out["magnitude"] == pytest.approx(m, abs=1e-3)
    assert out["parameters"] == {
        "temperature": pytest.approx(min(1.5, 0.5 + m * 2 * 0.1), abs=1e-3),
        "top_p": 0.9,
        "repetition_penalty": 1.1,
        "max_tokens": 8,
    }
    assert out["results"][0]["answer"]


def test_api_prompt_fewshot_and_modulation_run_as_a_sweep(llama_server, smollm2, smollm2_vector, tmp_path, monkeypatch):
    from personactl.evaluate import validate_config
    from personactl.experiment import run as run_experiment

    monkeypatch.setenv("PERSONACTL_API_BASE_URL", llama_server)
    monkeypatch.setenv("PERSONACTL_API_KEY", "none")
    config = validate_config(
        {
            "name": "api",
            "vector": str(smollm2_vector),
            "methods": ["api-prompt", "fewshot", "modulation"],
            "backend": "openai:smollm2",
            "layers": [20],
            "coefs": [0, 1],
            "n_questions": 2,
            "max_new_tokens": 12,
            "temperature": 0.5,
        }
    )
    result = run_experiment(config, tmp_path, backbone=smollm2, report=False)
    records = [json.loads(line) for line in (tmp_path / "api" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 3 * 2 * 2 and {r["method"] for r in records} == {"api-prompt", "fewshot", "modulation"}
    assert all(isinstance(r["answer"], str) for r in records) and sum(bool(r["answer"]) for r in records) >= 10
    with open(tmp_path / "api" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["method"], float(r["coef"])) for r in rows} == {(m, c) for m in ("api-prompt", "fewshot", "modulation") for c in (0.0, 1.0)}
    assert len(result.verdicts) == 3
    by_key = {(r["method"], r["coef"], r["question_id"]): r["answer"] for r in records}
    # coef 0 of api-prompt and fewshot is the same plain request with the same seed: the same answer
    assert by_key[("api-prompt", 0.0, 0)] == by_key[("fewshot", 0.0, 0)]


def test_fewshot_runs_on_the_local_model_with_the_shots_in_its_prompt(tiny, monkeypatch):
    import personactl.blackbox.fewshot as fewshot

    seen = []
    real = fewshot.generate

    def spy(backbone, prompts, **kw):
        seen.extend(prompts)
        return real(backbone, prompts, **kw)

    monkeypatch.setattr(fewshot, "generate", spy)
    ctx = MethodContext(tiny, load_trait("pirate"), None, GenerationSettings(max_new_tokens=3), pairs=make_pairs())
    answers = make_method("fewshot", ctx).generate(["Why?", "Why?", "Why?"], [0.0, 1.0, -1.0], 0, [0, 1, 2])
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert len(seen[0]) == 1 and len(seen[1]) == 5 and seen[1][1]["content"] in PIRATE and seen[2][1]["content"] in PLAIN
