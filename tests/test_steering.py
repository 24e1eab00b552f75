import pytest
import torch
from conftest import tiny_backbone
from hypothesis import given, settings
from hypothesis import strategies as st

from personactl import PersonaVector, SteeringError, SteeringTerm, activations, generate, steer
from personactl.errors import LayerError


def _vector(backbone, seed=1):
    torch.manual_seed(seed)
    return PersonaVector(torch.randn(backbone.n_layers + 1, backbone.hidden_size), trait="random")


def _states(backbone, batch):
    return activations.hidden_states(backbone, batch.input_ids, batch.attention_mask)


@pytest.fixture
def batch(tiny):
    return activations.make_batch(tiny, ["<user>one two", "<user>three"], [" four five", " six"])


@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_add_changes_exactly_the_chosen_positions_by_coef_v(tiny, positions):
    vector, layer, coef = _vector(tiny), 2, 1.5
    # left padding: with equal response lengths, the prompt/response boundary is one column
    batch = activations.make_batch(tiny, ["<user>one two", "<user>three"], [" four", " five"])
    prompt_length = None if positions == "all" else batch.input_ids.shape[1] - 5
    base = _states(tiny, batch)
    with steer(tiny, SteeringTerm(vector, layer, coef, positions=positions), prompt_length=prompt_length):
        steered = _states(tiny, batch)
    diff = steered[layer] - base[layer]
    expected_at = {
        "all": torch.ones(batch.input_ids.shape, dtype=torch.bool),
        "prompt": torch.arange(batch.input_ids.shape[1])[None].expand_as(batch.input_ids) < (prompt_length or 0) - 1,
        "response": torch.arange(batch.input_ids.shape[1])[None].expand_as(batch.input_ids) >= (prompt_length or 0) - 1,
    }[positions]
    torch.testing.assert_close(diff[expected_at], (coef * vector[layer]).expand(int(expected_at.sum()), -1), rtol=1e-5, atol=1e-5)
    assert torch.equal(diff[~expected_at], torch.zeros_like(diff[~expected_at]))
    torch.testing.assert_close(steered[:layer], base[:layer], rtol=0, atol=0)  # earlier layers untouched


def test_response_positions_steer_the_last_prompt_token_and_generated_tokens(tiny):
    """persona_vectors' `response`: at prefill only the last prompt token, then every new token."""
    vector, layer = _vector(tiny), 1
    seen, fed = [], []
    hook = tiny.block(layer).register_forward_hook(lambda m, a, o: seen.append((o[0] if isinstance(o, tuple) else o).clone()))
    ids_hook = tiny.model.get_input_embeddings().register_forward_hook(lambda m, a, o: fed.append(a[0].clone()))
    try:
        prompts = ["<user>hello"]
        generate(tiny, prompts, max_new_tokens=1)
        base = seen[0]
        seen.clear()
        fed.clear()
        generate(tiny, prompts, max_new_tokens=3, steering=[SteeringTerm(vector, layer, 2.0, positions="response")])
    finally:
        hook.remove()
        ids_hook.remove()
    assert [s.shape[1] for s in seen] == [base.shape[1], 1, 1]  # the prompt, then one call per new token
    torch.testing.assert_close(seen[0][:, :-1], base[:, :-1], rtol=0, atol=0)  # the prompt before its last token is untouched
    torch.testing.assert_close(seen[0][:, -1] - base[:, -1], 2.0 * vector[layer][None], rtol=1e-4, atol=1e-4)
    # block 0's output at the first new token depends on unsteered inputs only, so it differs by exactly 2 v
    ids = torch.cat([fed[0], fed[1]], dim=1)
    plain = activations.hidden_states(tiny, ids, torch.ones_like(ids))[layer]
    torch.testing.assert_close(seen[1][:, 0] - plain[:, -1], 2.0 * vector[layer][None], rtol=1e-4, atol=1e-4)


def _hooks(backbone):
    return [dict(block._forward_hooks) for block in backbone.layers]


def test_hooks_are_removed_even_on_exception(tiny, batch):
    base = _states(tiny, batch)
    before = _hooks(tiny)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny, SteeringTerm(_vector(tiny), [1, 2, 3], 3.0)):
            raise RuntimeError("boom")
    assert _hooks(tiny) == before
    torch.testing.assert_close(_states(tiny, batch), base, rtol=0, atol=0)


def test_per_row_coefficients_equal_separate_runs(tiny):
    vector, coefs = _vector(tiny), [-2.0, 0.0, 1.0, 3.0]
    batch = activations.make_batch(tiny, ["<user>same prompt"] * len(coefs), [" same answer"] * len(coefs))
    with steer(tiny, SteeringTerm(vector, 2, coefs)):
        together = _states(tiny, batch)
    for row, coef in enumerate(coefs):
        with steer(tiny, SteeringTerm(vector, 2, coef)):
            alone = _states(tiny, batch)
        torch.testing.assert_close(together[:, row], alone[:, row], rtol=1e-6, atol=1e-6)


def test_per_row_generation_equals_separate_generations(tiny):
    vector, coefs = _vector(tiny), [0.0, 4.0]
    prompts = ["<user>hi"] * 2
    together = generate(tiny, prompts, max_new_tokens=5, steering=[SteeringTerm(vector, 1, coefs)])
    for i, coef in enumerate(coefs):
        assert generate(tiny, prompts[:1], max_new_tokens=5, steering=[SteeringTerm(vector, 1, coef)]) == [together[i]]


def test_per_row_coefficients_follow_their_rows_into_every_batch(tiny):
    """Each batch gets its own slice of the coefficients: [0, 0, 8, 8] answers alike in batches of 2 and of 4."""
    vector, coefs = _vector(tiny), [0.0, 0.0, 8.0, 8.0]
    prompts = ["<user>hi", "<user>tell me more"] * 2  # rows 2 and 3 repeat rows 0 and 1, steered

    def answers(batch_size):
        return generate(tiny, prompts, max_new_tokens=6, steering=[SteeringTerm(vector, 1, coefs)], batch_size=batch_size)

    whole, halves = answers(4), answers(2)
    assert whole[2:] != whole[:2]  # steering changes these answers, so a batch given the wrong coefficients shows
    assert halves == whole


def test_ablate_projects_the_direction_out(tiny, batch):
    vector, layer = _vector(tiny), 2
    with steer(tiny, SteeringTerm(vector, layer, 1.0, op="ablate")):
        steered = _states(tiny, batch)
    projection = steered[layer] @ vector.unit(layer)
    assert projection.abs().max() < 1e-4


def test_norm_preserving_keeps_each_norm(tiny, batch):
    vector, layer = _vector(tiny), 1
    base = _states(tiny, batch)
    with steer(tiny, SteeringTerm(vector, layer, 5.0, norm_preserving=True)):
        steered = _states(tiny, batch)
    torch.testing.assert_close(steered[layer].norm(dim=-1), base[layer].norm(dim=-1), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(steered[layer], base[layer])


def test_several_vectors_add_up(tiny, batch):
    a, b = _vector(tiny, 1), _vector(tiny, 2)
    with steer(tiny, SteeringTerm(a, 2, 1.0), SteeringTerm(b, 2, -0.5)):
        both = _states(tiny, batch)
    with steer(tiny, SteeringTerm(a - 0.5 * b, 2, 1.0)):
        combined = _states(tiny, batch)
    torch.testing.assert_close(both, combined, rtol=1e-5, atol=1e-5)


def test_bad_requests_are_clear_errors(tiny, batch):
    _states(tiny, batch)  # transformers installs its own capture hooks on first use
    before = _hooks(tiny)
    with pytest.raises(LayerError, match="out of range"):
        with steer(tiny, SteeringTerm(_vector(tiny), tiny.n_layers + 1, 1.0)):
            pass
    with pytest.raises(SteeringError, match="per-row coefficients"):
        with steer(tiny, SteeringTerm(_vector(tiny), 1, [1.0, 2.0, 3.0])):
            _states(tiny, batch)
    assert _hooks(tiny) == before


@settings(max_examples=12, deadline=None)
@given(layer=st.integers(1, 3), positions=st.sampled_from(["all", "prompt", "response"]), seed=st.integers(0, 1000))
def test_steering_with_coefficient_zero_is_the_identity(layer, positions, seed):
    backbone = tiny_backbone("llama")
    batch = activations.make_batch(backbone, ["<user>one two", "<user>three"], [" four", " five"])
    base = _states(backbone, batch)
    with steer(backbone, SteeringTerm(_vector(backbone, seed), layer, 0.0, positions=positions), prompt_length=batch.input_ids.shape[1] - 5):
        steered = _states(backbone, batch)
    assert torch.equal(steered, base)
