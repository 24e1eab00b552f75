"""Conditional steering: per-row gating in one batch, the prefill rule, hook clean-up, `condition find`, bad input."""

import json
import math

import pytest
import torch

from personactl import Condition, PersonaVector, SteeringError, SteeringTerm, generate, steer
from personactl.activations import make_batch
from personactl.cli import run
from personactl.conditions import (
    balanced_accuracy,
    best_threshold,
    condition_from_vector,
    conditional_effect,
    find_condition,
    prompt_activations,
    read_prompts,
    template_prefix,
)
from personactl.errors import ConditionError
from personactl.generation import chat_prompt, format_prompts
from personactl.steering import prompt_mean

SEA = [f"the sea {w} ships sail" for w in ("a", "b", "c", "d", "e", "f", "g", "h", "i", "j")]
OTHER = [f"{w} cook 123 bread %" for w in ("k", "l", "m", "n", "o", "p", "q", "r", "s", "t")]


def _logits(backbone, batch):
    return backbone.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits


def _condition_between(backbone, texts, layer):
    """A random condition at `layer` whose threshold lies between the two prompts' scores (the first fires)."""
    torch.manual_seed(3)
    vector = torch.randn(backbone.n_layers + 1, backbone.hidden_size)
    unit = vector[layer] / vector[layer].norm()
    scores = prompt_activations(backbone, texts)[:, layer] @ unit
    sign = 1.0 if scores[0] > scores[1] else -1.0
    return Condition(vector * sign, layer, float(sign * scores.mean())), scores


@torch.no_grad()
def test_rows_are_steered_exactly_when_their_prompt_fires(tiny):
    texts = format_prompts(tiny, [chat_prompt("ahoy there, the sea!"), chat_prompt("12 + 7 = ?")])
    batch = make_batch(tiny, texts)
    condition, _ = _condition_between(tiny, texts, layer=1)
    torch.manual_seed(1)
    terms = [SteeringTerm(torch.randn(tiny.n_layers + 1, tiny.hidden_size), [1, 2, 3], 6.0)]  # all at/after layer 1
    base = _logits(tiny, batch)
    with steer(tiny, *terms):
        always = _logits(tiny, batch)
    with steer(tiny, *terms, condition=condition) as gate:
        gated = _logits(tiny, batch)
    assert gate.fired.tolist() == [True, False]
    assert not torch.allclose(always[0], base[0])  # the steering matters
    assert torch.equal(gated[0], always[0])  # fired: exactly the unconditional steering
    assert torch.equal(gated[1], base[1])  # not fired: exactly unsteered
    # the same in generation, row by row, with decisions reported per batch
    seen = []
    answers = generate(
        tiny,
        texts,
        steering=terms,
        condition=condition,
        max_new_tokens=5,
        batch_size=2,
        on_condition=lambda fired, scores: seen.append(fired.tolist()),
    )
    assert seen == [[True, False]]
    assert answers[0] == generate(tiny, texts, steering=terms, max_new_tokens=5, batch_size=2)[0]
    assert answers[1] == generate(tiny, texts, max_new_tokens=5, batch_size=2)[1]


@torch.no_grad()
def test_steering_before_the_condition_layer_waits_for_the_decision():
    """At prefill a layer before the condition layer is not steered (nothing is decided yet); the generated tokens are."""
    from conftest import tiny_backbone

    backbone = tiny_backbone("llama")
    texts = format_prompts(backbone, [chat_prompt("ahoy there, the sea!"), chat_prompt("12 + 7 = ?")])
    batch = make_batch(backbone, texts)
    condition, _ = _condition_between(backbone, texts, layer=2)
    torch.manual_seed(1)
    term = SteeringTerm(torch.randn(backbone.n_layers + 1, backbone.hidden_size), 1, 6.0)
    model = backbone.model
    kwargs = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=True)
    base = model(**kwargs)
    step = dict(
        input_ids=base.logits[:, -1].argmax(-1, keepdim=True),
        attention_mask=torch.cat([batch.attention_mask, torch.ones(2, 1, dtype=torch.long)], 1),
        position_ids=batch.position_ids[:, -1:] + 1,
    )
    base_next = model(**step, past_key_values=base.past_key_values).logits
    with steer(backbone, term, condition=condition) as gate:
        prefill = model(**kwargs)
        assert gate.fired.tolist() == [True, False]
        nxt = model(**step, past_key_values=prefill.past_key_values).logits
    assert torch.equal(prefill.logits, base.logits)  # the prefill: layer 1 < condition layer 2, untouched
    assert not torch.allclose(nxt[0], base_next[0])  # the first generated token of the row that fired is steered
    assert torch.equal(nxt[1], base_next[1])  # the other row is not


@torch.no_grad()
def test_a_less_condition_fires_below_its_threshold_and_steers_those_rows(tiny):
    """comparison="less" is the mirror of "greater": the row whose score is below the threshold fires, and only it."""
    condition = Condition(torch.ones(4), 1, 0.5, "less")
    assert condition.fires(torch.tensor([-1.0, 0.5, 2.0])).tolist() == [True, False, False]
    assert Condition(torch.ones(4), 1, 0.5).fires(torch.tensor([-1.0, 0.5, 2.0])).tolist() == [False, False, True]
    texts = format_prompts(tiny, [chat_prompt("ahoy there, the sea!"), chat_prompt("12 + 7 = ?")])
    batch = make_batch(tiny, texts)
    greater, _ = _condition_between(tiny, texts, layer=1)  # the first row fires
    less = Condition(greater.vector, greater.layer, greater.threshold, "less")
    torch.manual_seed(1)
    term = SteeringTerm(torch.randn(tiny.n_layers + 1, tiny.hidden_size), [1, 2, 3], 6.0)
    base = _logits(tiny, batch)
    with steer(tiny, term):
        always = _logits(tiny, batch)
    with steer(tiny, term, condition=less) as gate:
        gated = _logits(tiny, batch)
    assert gate.fired.tolist() == [False, True]
    assert torch.equal(gated[0], base[0]) and torch.equal(gated[1], always[1])
    pos, neg = torch.tensor([-2.0, -1.0, 3.0]), torch.tensor([1.0, 2.0])
    assert balanced_accuracy(pos, neg, 0.0, "less") == pytest.approx(0.5 * (2 / 3 + 1))
    assert balanced_accuracy(pos, neg, 0.0) == pytest.approx(0.5 * (1 / 3 + 0))
    assert (
        condition_from_vector(PersonaVector(torch.ones(3, 4), extra={"condition": {"layer": 1, "threshold": 0.5}}), comparison="less").comparison
        == "less"
    )


CRITERIA = (
    "fires on >= 90% of the on-topic questions",
    "fires on <= 10% of the other questions",
    "trait rises on the on-topic questions (paired CI above 0)",
    "no rise where it fired on other questions (their paired CI not above 0)",
    "the other questions' mean rise is below 5 points (upper 95% bound)",
)


def _effect(fired_off: list[float], n_off: int = 30, margin: float = 5.0):
    """30 on-topic questions (28 fire, +10 each) and `n_off` others; those that fire rise by `fired_off` (greedy: the
    rest differ by exactly 0)."""
    on_rises = [10.0 + (i % 3) for i in range(28)] + [0.0, 0.0]
    off_rises = fired_off + [0.0] * (n_off - len(fired_off))
    rises = on_rises + off_rises
    fired = [True] * 28 + [False] * 2 + [True] * len(fired_off) + [False] * (n_off - len(fired_off))
    unsteered = [40.0 + i % 7 for i in range(len(rises))]
    return conditional_effect([True] * 30 + [False] * n_off, fired, [u + r for u, r in zip(unsteered, rises)], unsteered, margin=margin)


def test_three_other_questions_firing_at_plus_80_fail_the_criteria():
    """The issue's case: 3 of 30 other questions fire and rise by ~80. The old rule (the paired CI over all 30 other
    questions includes 0) passed it, because the 27 zeros pin the lower bound to 0; now the questions that fired
    show the rise, and the mean rise over the others cannot be bounded below 5 points."""
    effect = _effect([78.0, 80.0, 83.0])
    assert effect.n_fired_off == 3 and effect.fires_off == pytest.approx(0.1)
    assert effect.rise_off_fired[0] == pytest.approx(241 / 3) and effect.rise_off_fired[1] > 60
    assert effect.rise_off_bound > effect.rise_off[0] == pytest.approx(241 / 30)
    assert list(effect.criteria().values()) == [True, True, True, False, False]
    assert tuple(effect.criteria()) == CRITERIA


def test_no_firing_on_other_questions_passes_only_where_the_bound_allows():
    """No other question fires: nothing rose where it fired, but with 30 other questions the share that fires may
    still be 13.6% (Clopper-Pearson), at up to 100 points each; with 150 it is below 3% and the margin is met."""
    small, large = _effect([]), _effect([], n_off=150)
    assert small.rise_off == (0.0, 0.0, 0.0) and math.isnan(small.rise_off_fired[0])
    assert small.rise_off_bound == pytest.approx(100 * (1 - 0.0125 ** (1 / 30)))
    assert list(small.criteria().values()) == [True, True, True, True, False]
    assert large.rise_off_bound < 5.0 and all(large.criteria().values())
    assert _effect([], margin=20.0).criteria()[CRITERIA[4].replace(" 5 ", " 20 ")]


def test_one_fired_other_question_is_bounded_by_the_scale():
    """One other question fires (+76): no interval for it, and the bound takes the largest rise possible (100)."""
    effect = _effect([76.0])
    assert effect.rise_off_fired[0] == 76.0 and math.isnan(effect.rise_off_fired[1])
    assert effect.criteria()[CRITERIA[3]] and not effect.criteria()[CRITERIA[4]]
    from scipy.stats import binomtest

    share = binomtest(1, 30).proportion_ci(confidence_level=0.975, method="exact").high  # 1 of 30, at 1 - 0.05 / 2
    assert effect.rise_off_bound == pytest.approx(100 * share)


def test_conditional_effect_averages_samples_of_one_question_first():
    """Three samples of one question count once: the rise of a question is its samples' mean."""
    effect = conditional_effect(
        [True, True, True, True, False, False],
        [True] * 4 + [False] * 2,
        [50.0, 60.0, 70.0, 80.0, 10.0, None],
        [40.0, 40.0, 40.0, 50.0, 10.0, 5.0],
        ["a", "a", "a", "b", "c", "d"],
    )
    assert (effect.n_on, effect.n_off) == (2, 1)  # question d has no scored pair
    assert effect.rise_on[0] == pytest.approx((20.0 + 30.0) / 2)
    with pytest.raises(ConditionError, match="one per answer"):
        conditional_effect([True], [True, False], [1.0], [1.0])


def _hook_counts(backbone):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in backbone.model.modules()]


def test_hooks_are_removed_on_exit_and_after_an_exception(tiny):
    before = _hook_counts(tiny)
    condition = Condition(torch.randn(tiny.n_layers + 1, tiny.hidden_size), 1, 0.0)
    term = SteeringTerm(torch.randn(tiny.hidden_size), 2, 1.0)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny, term, condition=condition):
            assert _hook_counts(tiny) != before
            raise RuntimeError("boom")
    assert _hook_counts(tiny) == before
    with steer(tiny, term, condition=condition) as gate:
        assert gate.fired is None
    assert _hook_counts(tiny) == before
    with pytest.raises(SteeringError, match="last one"):  # HF reports the last layer after the final norm
        with steer(tiny, term, condition=Condition(condition.vector, tiny.n_layers, 0.0)):
            pass
    assert _hook_counts(tiny) == before


def test_best_threshold_takes_the_middle_of_the_widest_gap():
    threshold, accuracy, gap = best_threshold(torch.tensor([3.0, 4.0, 9.0]), torch.tensor([0.0, 1.0]))
    assert (threshold, accuracy, gap) == (2.0, 1.0, 1.0)
    threshold, accuracy, _ = best_threshold(torch.tensor([0.0, 5.0, 7.0]), torch.tensor([1.0, 2.0]))  # 0.0 cannot be right
    assert threshold == 3.5 and accuracy == pytest.approx(0.5 * (2 / 3 + 1))


@pytest.mark.parametrize("system", [None, "Be brief."])
def test_template_prefix_is_the_chat_template_before_the_user_message(tiny, system):
    """Every token before the user's text (system prompt and headers included) is the prefix; at least one."""
    text = tiny.chat(chat_prompt("Zebra", system))
    before = tiny.encode([text[: text.index("Zebra")]])[0]
    assert template_prefix(tiny, system) == max(len(before), 1)
    assert tiny.encode([text])[0][: len(before)] == before  # the prefix is the formatted prompt's first tokens
    if system:
        assert template_prefix(tiny, system) > template_prefix(tiny) + len(system) - 1


def test_the_score_ignores_the_prefix_tokens_whatever_the_padding():
    torch.manual_seed(0)
    hidden = torch.randn(3, 9, 4)
    mask = torch.tensor([[1] * 9, [0, 0, 0] + [1] * 6, [0] * 7 + [1] * 2])  # left padding; the last row is short
    skip = 4
    score = prompt_mean(hidden, mask, skip)
    changed = hidden.clone()
    for row, first in enumerate((0, 3, 7)):
        changed[row, first : min(first + skip, 8)] += 100.0  # other template tokens (a short row keeps its last one)
    torch.testing.assert_close(prompt_mean(changed, mask, skip), score)
    torch.testing.assert_close(score[0], hidden[0, 4:].mean(0))
    torch.testing.assert_close(score[1], hidden[1, 7:].mean(0))
    torch.testing.assert_close(score[2], hidden[2, 8])  # shorter than the prefix: its last token
    torch.testing.assert_close(prompt_mean(hidden, mask), prompt_mean(hidden, mask, 1))  # the default: the first token only
    torch.testing.assert_close(prompt_mean(hidden, mask, 1)[1], hidden[1, 4:].mean(0))


def test_find_condition_separates_prompts_and_the_gate_reads_the_same_scores(tmp_path):
    from conftest import tiny_backbone

    backbone = tiny_backbone("llama")
    search = find_condition(backbone, SEA, OTHER, heldout=0.3, seed=0, name="sea")
    assert [fit.layer for fit in search.layers] == [1, 2]
    assert search.chosen.heldout_accuracy == 1.0 and search.chosen.cv_accuracy == 1.0
    assert len(search.heldout[0]) == 3 and not set(search.heldout[0]) & set(search.train[0])
    path = search.vector.save(tmp_path / "sea.safetensors")
    from personactl import load_vector

    loaded = condition_from_vector(load_vector(path, backbone=backbone))
    assert (loaded.layer, loaded.threshold, loaded.comparison) == (search.condition.layer, search.condition.threshold, "greater")
    assert loaded.skip_prefix == search.condition.skip_prefix == template_prefix(backbone) > 0
    old_file = PersonaVector(loaded.vector.directions, extra={"condition": {"layer": 1, "threshold": 0.0}})
    assert condition_from_vector(old_file).skip_prefix == 1  # files from before the prefix: the first token only
    other_layer = 3 - loaded.layer
    assert condition_from_vector(loaded.vector, layer=other_layer).threshold == search.vector.extra["condition"]["thresholds"][str(other_layer)]
    # generation fires on the held-out sea prompts and on none of the others, with the scores find measured
    held = search.heldout[0] + search.heldout[1]
    decisions = []
    generate(
        backbone,
        [chat_prompt(p) for p in held],
        condition=loaded,
        max_new_tokens=2,
        batch_size=6,
        on_condition=lambda fired, scores: decisions.append((fired, scores)),
    )
    ((fired, scores),) = decisions
    assert fired.tolist() == [True] * 3 + [False] * 3
    unit = loaded.vector.unit(loaded.layer)
    expected = prompt_activations(backbone, format_prompts(backbone, [chat_prompt(p) for p in held]), skip=loaded.skip_prefix)[:, loaded.layer] @ unit
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)


def test_prompt_files(tmp_path):
    (tmp_path / "p.txt").write_text("one\n\n  two  \n\n")
    assert read_prompts(tmp_path / "p.txt") == ["one", "two"]
    assert len(read_prompts("sea")) >= 40 and len(read_prompts("other")) >= 40  # shipped sets
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ConditionError, match="holds no prompts"):
        read_prompts(tmp_path / "empty.txt")
    with pytest.raises(ConditionError, match="not found"):
        read_prompts(tmp_path / "missing.txt")


def _error_line(capsys):
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, captured
    return err


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the mistake was found")

    monkeypatch.setattr("personactl.cli._common._load", refuse)


def test_an_empty_prompt_file_is_one_line(tmp_path, capsys, no_model_load):
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "b.txt").write_text("\n".join(OTHER))
    assert run(["condition", "find", "--positive", str(tmp_path / "empty.txt"), "--negative", str(tmp_path / "b.txt")]) == 2
    assert "holds no prompts" in _error_line(capsys)


@pytest.mark.parametrize("threshold", ["abc", "nan", "1,5"])
def test_a_threshold_that_is_not_a_number_is_one_line(threshold, vector_file, capsys, no_model_load):
    assert run(["generate", "--prompt", "hi", "--condition", str(vector_file), "--condition-layer", "1", "--threshold", threshold]) == 2
    assert f"--threshold '{threshold}' is not a number" in _error_line(capsys)


def test_a_condition_vector_for_another_model_is_one_line(model_dir, tmp_path, capsys):
    other = PersonaVector(torch.randn(4, 32), trait="condition-sea", extra={"condition": {"layer": 1, "threshold": 0.0}})
    path = other.save(tmp_path / "c.safetensors")
    assert run(["generate", "--model", str(model_dir), "--prompt", "hi", "--condition", str(path)]) == 2
    assert "hidden size 32" in _error_line(capsys)


def test_condition_find_then_generate_with_it(model_dir, tmp_path, capsys):
    (tmp_path / "sea.txt").write_text("\n".join(SEA))
    (tmp_path / "other.txt").write_text("\n".join(OTHER))
    out_path = tmp_path / "cond.safetensors"
    assert (
        run(
            [
                "condition",
                "find",
                "--model",
                str(model_dir),
                "--positive",
                str(tmp_path / "sea.txt"),
                "--negative",
                str(tmp_path / "other.txt"),
                "--out",
                str(out_path),
                "--json",
            ]
        )
        == 0
    )
    found = json.loads(capsys.readouterr().out)
    assert found["heldout_accuracy"] == 1.0 and out_path.is_file() and len(found["layers"]) == 2
    assert (
        run(
            [
                "generate",
                "--model",
                str(model_dir),
                "--prompt",
                SEA[0],
                "--prompt",
                OTHER[0],
                "--condition",
                str(out_path),
                "--max-new-tokens",
                "2",
                "--json",
            ]
        )
        == 0
    )
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["condition_fired"] for r in results] == [True, False]


@pytest.mark.slow
def test_the_sea_condition_on_smollm2(smollm2):
    search = find_condition(smollm2, read_prompts("sea"), read_prompts("other"))
    assert search.chosen.cv_accuracy >= 0.9
    assert search.chosen.heldout_accuracy >= 0.8
    assert max(fit.heldout_accuracy for fit in search.layers) >= 0.9
