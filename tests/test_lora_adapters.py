import json

import pytest
import torch
from conftest import tiny_backbone

from personactl.lora.adapters import (
    PersonaDataError,
    PersonaSwitcher,
    adapter_defaults,
    list_adapters,
    merge_adapter,
    read_persona_data,
    resolve_adapter,
    train_adapter,
)
from personactl.lora.config import LoRATrainConfig
from personactl.lora.direction import AdapterError, LoRADirection


def _write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def _data(tmp_path, word, n=12):
    return _write(tmp_path / f"{word}.jsonl", [{"instruction": f"say {i}", "output": f"{word} {i}"} for i in range(n)])


def _config(backbone):
    return LoRATrainConfig(**{**vars(adapter_defaults(backbone)), "rank": 2, "alpha": 4.0, "batch_size": 4, "learning_rate": 1e-2, "epochs": 2})


def test_persona_data_reports_what_it_skips_and_names_bad_lines(tmp_path):
    data = read_persona_data(
        _write(
            tmp_path / "d.jsonl",
            [
                {"instruction": "a", "output": "x"},
                {"instruction": "b", "input": "ctx", "output": "y"},
                {"instruction": "c", "output": "  "},
                {"instruction": "a", "output": "x"},
                {"instruction": "d", "output": "z" * 5000},
            ],
        )
    )
    assert data.questions == ["a", "b\n\nctx"] and (data.empty, data.duplicates, data.too_long) == ([3], [4], [5])
    assert "1 empty outputs skipped (lines 3)" in data.describe()
    with pytest.raises(PersonaDataError, match="line 2: field 'output'"):
        read_persona_data(_write(tmp_path / "bad.jsonl", [{"instruction": "a", "output": "x"}, {"instruction": "b"}]))
    with pytest.raises(PersonaDataError, match="line 1: not valid JSON"):
        read_persona_data(_write(tmp_path / "bad2.jsonl", ["{oops"]))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_train_swap_and_merge(tmp_path, arch, monkeypatch):
    monkeypatch.setenv("PERSONACTL_ADAPTERS", str(tmp_path / "registry"))
    backbone = tiny_backbone(arch)
    before = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    for word in ("arr", "sir"):
        card = train_adapter(backbone, _data(tmp_path, word), word, tmp_path / "registry" / word, _config(backbone))
        assert card["n_val"] >= 1 and len(card["metrics"]) == 2 and card["metrics"][0]["val_perplexity"] > 1
    assert [c["name"] for c in list_adapters()] == ["arr", "sir"]
    assert all(torch.equal(p, before[n]) for n, p in backbone.model.named_parameters())
    ids = torch.tensor([[4, 9, 17, 30]])

    def logits():
        with torch.no_grad():
            return backbone.model(input_ids=ids).logits

    base = logits()
    with PersonaSwitcher(backbone) as switch:
        switch.load("arr", resolve_adapter("arr"))
        switch.load("sir", resolve_adapter("sir"))
        switch.use("arr")
        arr = logits()
        switch.use("sir")
        sir = logits()
        switch.use(None)
        torch.testing.assert_close(logits(), base)
        assert not torch.allclose(arr, sir) and not torch.allclose(arr, base)
        with pytest.raises(AdapterError, match="not loaded"):
            switch.use("nobody")
    torch.testing.assert_close(logits(), base)
    assert all(torch.equal(p, before[n]) for n, p in backbone.model.named_parameters())

    from transformers import AutoModelForCausalLM

    out = merge_adapter(backbone, resolve_adapter("arr"), tmp_path / "merged")
    standalone = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        torch.testing.assert_close(standalone(input_ids=ids).logits, arr, rtol=1e-4, atol=1e-5)


def test_unknown_adapter_names_stay_inside_the_registry(tmp_path):
    with pytest.raises(AdapterError, match="no adapter '../etc'"):
        resolve_adapter("../etc", tmp_path)


def test_adherence_reports_scores_perplexity_drift_and_the_llm_judge(tmp_path, monkeypatch):
    from fake_openai import FakeChat, serve

    from personactl.judges.llm import JudgeError
    from personactl.lora.adherence import adherence, neutral_text

    monkeypatch.setenv("PERSONACTL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PERSONACTL_JUDGE_API_KEY", "k")
    backbone = tiny_backbone("llama")
    data = _write(tmp_path / "d.jsonl", [{"instruction": f"say {i}", "output": f"arr matey {i}"} for i in range(30)])
    train_adapter(backbone, data, "arr", tmp_path / "arr", _config(backbone), heldout=0.2)
    state = FakeChat()
    with serve(state) as url:
        monkeypatch.setenv("PERSONACTL_JUDGE_BASE_URL", url)
        result = adherence(backbone, tmp_path / "arr", data, n_fit=12, max_new_tokens=4, judge_spec="openai:fake", description="a pirate")
    assert result["n_eval"] == 6 and len(result["adherence_adapter"]) == 3
    assert result["persona_perplexity"]["after"] != result["persona_perplexity"]["before"]
    assert result["neutral_perplexity"]["before"] > 0 and len(neutral_text()[0]) >= 30
    assert result["llm_judge"] == "openai:fake:persona" and state.count == 12  # 6 base + 6 adapter answers
    prompt = state.requests[0]["messages"][-1]["content"]
    assert 'persona "arr"' in prompt and "The persona: a pirate" in prompt and "- arr matey" in prompt
    with pytest.raises(JudgeError, match="needs an LLM judge"):
        adherence(backbone, tmp_path / "arr", data, judge_spec="embed")


@pytest.mark.parametrize("name", ["pirate_coder", "formal_butler"])
def test_shipped_persona_datasets_are_clean_and_large_enough(name):
    from importlib.resources import files

    data = read_persona_data(str(files("personactl") / "data" / "personas" / f"{name}.jsonl"))
    assert len(data.questions) >= 150
    assert not (data.empty or data.duplicates or data.too_long)


def test_labels_mask_exactly_the_prompt_and_padding(tiny):
    from personactl.activations import make_batch
    from personactl.lora.train import answer_labels

    batch = make_batch(tiny, ["<user>hello</s><assistant>", "<user>hi</s><assistant>"], ["arr", "aye aye"])
    labels = answer_labels(batch.input_ids, batch.response_mask)
    for row, answer in enumerate(["arr", "aye aye"]):
        kept = labels[row][labels[row] != -100]
        assert tiny.tokenizer.decode(kept) == answer
        assert (labels[row][~batch.response_mask[row]] == -100).all()


def test_adapter_folder_round_trip(tmp_path):
    from personactl.lora.direction import LoRADirection

    backbone = tiny_backbone("qwen2")
    train_adapter(backbone, _data(tmp_path, "arr"), "arr", tmp_path / "arr", _config(backbone))
    first = LoRADirection.load(tmp_path / "arr")
    first.save(tmp_path / "copy")
    again = LoRADirection.load(tmp_path / "copy")
    assert again.config == first.config and again.metadata["name"] == "arr"
    assert all(torch.equal(again.modules[n].A, f.A) and torch.equal(again.modules[n].B, f.B) for n, f in first.modules.items())


def test_training_never_replaces_someone_elses_folder_or_touches_siblings(tmp_path, monkeypatch):
    from personactl.errors import OutputError
    from personactl.lora.adapters import blend_adapters

    backbone = tiny_backbone("llama")
    config = LoRATrainConfig(**{**vars(_config(backbone)), "max_steps": 1, "epochs": 1})
    runs = tmp_path / "runs"
    (runs / "s").mkdir(parents=True)
    (runs / "s" / "results.jsonl").write_text("precious\n")
    with pytest.raises(OutputError, match="not a folder personactl wrote"):
        train_adapter(backbone, _data(tmp_path, "arr"), "arr", runs, config)
    assert (runs / "s" / "results.jsonl").read_text() == "precious\n"
    monkeypatch.chdir(runs)
    with pytest.raises(OutputError, match="current folder"):
        train_adapter(backbone, _data(tmp_path, "arr"), "arr", ".", config)
    with pytest.raises(AdapterError, match="not allowed"):
        train_adapter(backbone, _data(tmp_path, "arr"), "../arr", tmp_path / "x", config)

    (tmp_path / "arr.old").mkdir()  # a sibling the old code deleted on every save
    (tmp_path / "arr.old" / "keep.txt").write_text("mine")
    for _ in range(2):  # the second run replaces the adapter folder it wrote the first time
        card = train_adapter(backbone, _data(tmp_path, "arr"), "arr", tmp_path / "arr", config)
    assert card["name"] == "arr" and (tmp_path / "arr" / "persona.json").is_file()
    assert (tmp_path / "arr.old" / "keep.txt").read_text() == "mine"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp, set-aside or checkpoint folder left

    with pytest.raises(AdapterError, match="not allowed"):
        blend_adapters("arr=1", "../out", tmp_path)
    blend, folder = blend_adapters("arr=0.5", "half", tmp_path)
    assert folder == tmp_path / "half" and LoRADirection.load(folder).metadata["blend"] == "arr=0.5"


def test_corrupt_or_missing_cards_are_clear_errors(tmp_path):
    from personactl.lora.adapters import read_card

    (tmp_path / "a").mkdir()
    with pytest.raises(AdapterError, match="has no persona card"):
        read_card(tmp_path / "a")
    (tmp_path / "a" / "persona.json").write_text("{oops")
    with pytest.raises(AdapterError, match="is corrupt"):
        list_adapters(tmp_path)
