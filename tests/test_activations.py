import pytest
import torch

from personactl import activations


def test_capture_equals_output_hidden_states(tiny):
    batch = activations.make_batch(tiny, ["<user>hello there", "<user>hi"], [" general kenobi", " yo"])
    captured = activations.hidden_states(tiny, batch.input_ids, batch.attention_mask)
    with torch.no_grad():
        full = tiny.model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            output_hidden_states=True,
        )
    assert captured.shape == (tiny.n_layers + 1, 2, batch.input_ids.shape[1], tiny.hidden_size)
    for layer, reference in enumerate(full.hidden_states):
        torch.testing.assert_close(captured[layer], reference, rtol=0, atol=0)


def test_batch_marks_prompt_and_response_exactly(tiny):
    prompts, responses = ["abc", "abcdef"], ["xy", "z"]
    batch = activations.make_batch(tiny, prompts, responses)
    assert batch.prompt_mask.sum(1).tolist() == [3, 6]
    assert batch.response_mask.sum(1).tolist() == [2, 1]
    assert batch.attention_mask.sum(1).tolist() == [5, 7]
    assert not (batch.prompt_mask & batch.response_mask).any()
    assert batch.response_mask[:, -1].all()  # left padding: responses end the row


@pytest.mark.parametrize("positions", ["response_avg", "prompt_avg", "prompt_last", "last", "all_avg"])
def test_position_reductions_match_manual(tiny, positions):
    prompts, responses = ["hello", "hey you there"], ["abc", "de"]
    reduced = activations.collect(tiny, prompts, responses, positions=positions, batch_size=1)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        batch = activations.make_batch(tiny, [p], [r])  # no padding: one row
        states = activations.hidden_states(tiny, batch.input_ids, batch.attention_mask)[:, 0]
        n_prompt = len(p)
        expected = {
            "response_avg": states[:, n_prompt:].mean(1),
            "prompt_avg": states[:, :n_prompt].mean(1),
            "prompt_last": states[:, n_prompt - 1],
            "last": states[:, -1],
            "all_avg": states.mean(1),
        }[positions]
        torch.testing.assert_close(reduced[i], expected, rtol=1e-5, atol=1e-5)


def test_padding_does_not_change_reduced_activations(tiny):
    alone = activations.collect(tiny, ["hi"], ["there"], batch_size=1)
    padded = activations.collect(tiny, ["hi", "a much longer prompt"], ["there", "x"], batch_size=2)
    torch.testing.assert_close(padded[0], alone[0], rtol=1e-4, atol=1e-4)


def test_unknown_positions_is_an_error(tiny):
    with pytest.raises(ValueError, match="unknown positions"):
        activations.collect(tiny, ["a"], ["b"], positions="middle")


def test_collect_layer_is_collect_at_that_layer_for_any_length_order(tiny):
    from personactl.activations import collect, collect_layer

    prompts = ["a", "a much longer prompt here", "mid prompt", "b"]
    answers = ["short", "x", "a rather long answer with many words in it", "mid answer"]
    full = collect(tiny, prompts, answers, positions="response_avg", batch_size=2)
    for layer in (1, 2, tiny.n_layers):
        one = collect_layer(tiny, prompts, answers, layer, batch_size=2)
        assert torch.allclose(one, full[:, layer], atol=1e-5)
