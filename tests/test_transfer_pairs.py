"""Paired activations: word-aligned prefixes, reductions, layer correspondence, the offline corpus, caching."""

import re

import pytest
import torch
import transformers as tf
from conftest import char_tokenizer, tiny_backbone

from personactl import from_model
from personactl.activations import hidden_states, layer_states, make_batch
from personactl.transfer.pairs import (
    PairedActivations,
    TransferError,
    builtin_texts,
    collect_pairs,
    corresponding_layer,
    read_texts,
    shared_word_ends,
    token_ends,
)

TEXTS = ["the cat sat on the mat today", "a ship sails over the grey sea at dawn", "hello there my good friend"]


def _target():
    """A tiny gemma3 with another width (32) and depth (4) than the 48-d, 3-block source."""
    torch.manual_seed(1)
    config = tf.Gemma3TextConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=8,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return from_model(tf.Gemma3ForCausalLM(config).eval(), char_tokenizer(), name="tiny-target")


@pytest.mark.parametrize("layer", [0, 1, 2, 3])
def test_layer_states_equal_the_full_forward_and_stop_early(tiny, layer):
    batch = make_batch(tiny, ["hello there", "a longer text here"])
    full = hidden_states(tiny, batch.input_ids, batch.attention_mask)[layer]
    torch.testing.assert_close(layer_states(tiny, batch.input_ids, batch.attention_mask, layer), full)
    if 0 < layer < tiny.n_layers:
        ran = []
        handle = tiny.layers[layer].register_forward_hook(lambda *a: ran.append(1))
        try:
            layer_states(tiny, batch.input_ids, batch.attention_mask, layer)
        finally:
            handle.remove()
        assert not ran  # the blocks after the wanted layer never ran


def test_word_ends_shared_by_two_tokenizations():
    text = "ahoy there matey"  # word ends at 4, 10, 16
    source = {1: 0, 2: 1, 4: 2, 10: 3, 13: 4, 16: 5}
    target = {4: 3, 7: 4, 10: 5, 16: 6}  # 13 is not a target token end
    assert shared_word_ends(text, source, target) == [(3, 5), (5, 6)]  # (2, 3) dropped: too little context


def test_pairs_hold_each_models_state_after_the_same_prefix(tmp_path):
    source, target = tiny_backbone("llama"), _target()
    pairs = collect_pairs(source, target, TEXTS, 2, 3, n_pairs=100)
    # char tokenizers share every word end; those before the 4th token are skipped
    n_words = sum(1 for t in TEXTS for m in re.finditer(r"\S+", t) if m.end() - 1 >= 3)
    assert pairs.source.shape == (n_words, 48) and pairs.target.shape == (n_words, 32)
    ids, ends = token_ends(target, TEXTS[0])
    states = hidden_states(target, torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[3, 0]
    expected = {tuple(states[ends[m]].round(decimals=4).tolist()) for m in (7, 11, 14)}  # "the cat|sat|on" ends
    got = {tuple(row.round(decimals=4).tolist()) for row in pairs.target}
    assert expected <= got
    mean_pairs = collect_pairs(source, target, TEXTS, 2, 3, reduction="mean", n_pairs=100)
    assert not torch.allclose(mean_pairs.target, pairs.target)
    few = collect_pairs(source, target, TEXTS, 2, 3, n_pairs=5, seed=3)
    assert len(few) == 5


def test_pairs_cache_is_reused_only_for_the_same_request(tmp_path):
    source, target = tiny_backbone("llama"), _target()
    cache = tmp_path / "pairs.safetensors"
    first = collect_pairs(source, target, TEXTS, 2, 3, n_pairs=6, cache=cache)
    loaded = PairedActivations.load(cache)
    assert torch.equal(loaded.source, first.source) and loaded.info["source_layer"] == 2
    with torch.no_grad():
        target.model.model.embed_tokens.weight.mul_(2)  # the same request now gives other states: the cache must answer
    assert torch.equal(collect_pairs(source, target, TEXTS, 2, 3, n_pairs=6, cache=cache).target, first.target)
    assert not torch.equal(collect_pairs(source, target, TEXTS, 1, 3, n_pairs=6, cache=cache).target, first.target)


def test_layer_correspondence_corpus_and_bad_input(tmp_path):
    assert corresponding_layer(20, 30, 18) == 12 and corresponding_layer(30, 30, 18) == 18 and corresponding_layer(1, 30, 18) == 1
    assert corresponding_layer(5, 30, 18, "same") == 5
    with pytest.raises(TransferError, match="relative depth"):
        corresponding_layer(25, 30, 18, "same")
    with pytest.raises(TransferError, match="'same' or 'relative'"):
        corresponding_layer(5, 30, 18, "diagonal")
    texts = builtin_texts()
    assert len(texts) > 500 and len(set(texts)) == len(texts)
    (tmp_path / "t.jsonl").write_text('{"text": "one"}\n{"oops": 1}\n')
    with pytest.raises(TransferError, match="line 2"):
        read_texts(tmp_path / "t.jsonl")
    (tmp_path / "t.txt").write_text("first line\n\nsecond line\n")
    assert read_texts(tmp_path / "t.txt") == ["first line", "second line"]
    with pytest.raises(TransferError, match="no word boundaries"):
        collect_pairs(tiny_backbone("llama"), _target(), ["hi"], 1, 1)
    with pytest.raises(TransferError, match="unknown reduction"):
        collect_pairs(tiny_backbone("llama"), _target(), TEXTS, 1, 1, reduction="max")
