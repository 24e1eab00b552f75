"""Judges on tokenizers that write numbers digit by digit: "85" must read as 85, not 8."""

import math

import pytest
import torch
from conftest import tiny_backbone

from personactl.activations import make_batch
from personactl.generation import chat_prompt
from personactl.judges.base import digit_score, fill_rubric, unread_branches, weighted_score
from personactl.judges.branches import Completion, path_tables, table_distance
from personactl.judges.local import LocalJudge, digit_tokens

RUBRIC = "Rate {answer}:"
DIGITS = "0123456789"


def test_digit_score_reads_whole_numbers():
    assert digit_score({"": {"8": 1.0}, "8": {"5": 1.0}}) == pytest.approx(85)
    assert digit_score({"": {"1": 1.0}, "1": {"0": 1.0}, "10": {"0": 1.0}}) == pytest.approx(100)
    assert digit_score({"": {"7": 1.0}, "7": {}}) == pytest.approx(7)  # an empty table: the number ends


def test_digit_score_weighs_numbers_by_their_sequence_probability():
    # 0.6 "85", 0.4 "9" (then an end): 0.6 * 85 + 0.4 * 9
    tables = {"": {"8": 0.6, "9": 0.4}, "8": {"5": 1.0}, "9": {}}
    assert digit_score(tables) == pytest.approx(0.6 * 85 + 0.4 * 9)


def test_digit_score_excludes_leading_zeros_and_numbers_over_100_and_keeps_the_mass_rule():
    assert digit_score({"": {"0": 1.0}, "0": {"5": 1.0}}) is None  # "05" is not an answer
    assert digit_score({"": {"2": 1.0}, "2": {"0": 1.0}, "20": {"0": 1.0}}) is None  # "200" is over 100
    assert digit_score({"": {"5": 0.2}, "5": {}}) is None  # 0.2 < 0.25 of number mass


def test_an_unread_plausible_branch_gives_no_score_instead_of_a_guess():
    assert digit_score({"": {"7": 1.0}}) is None  # was read as 7: the digit after "7" is not known
    greedy_95 = {"": {"9": 0.5, "1": 0.5}, "9": {"5": 0.9, "0": 0.1}, "95": {}}
    assert unread_branches(greedy_95) == ["1"] and digit_score(greedy_95) is None
    read_1 = {**greedy_95, "1": {"0": 1.0}}
    assert unread_branches(read_1) == ["10"] and digit_score(read_1) is None  # 10 or 100: the digit after "10"
    assert digit_score({**read_1, "10": {"0": 1.0}}) == pytest.approx(0.5 * (0.9 * 95 + 0.1 * 90) + 0.5 * 100)


def test_a_branch_below_the_floor_is_left_out_of_the_mean():
    tables = {"": {"8": 0.6, "3": 0.009, "4": 0.2}, "8": {"5": 1.0}, "4": {"0": 1.0}}
    assert unread_branches(tables) == []  # "3" < 0.01
    assert digit_score(tables) == pytest.approx((0.6 * 85 + 0.2 * 40) / 0.8)
    assert unread_branches(tables, floor=0.005) == ["3"] and digit_score(tables, floor=0.005) is None


def logs(table):
    return {k: math.log(v) for k, v in table.items()}


def test_tables_along_a_completion_stop_at_its_first_non_digit_and_never_borrow():
    positions = [logs({"8": 0.7, "7": 0.2, "Sure": 0.1}), logs({"5": 0.9, "0": 0.1}), logs({"<end>": 1.0})]
    tables = path_tables(Completion(["8", "5", "<end>"], positions, stopped=False))
    assert tables == {"": pytest.approx({"8": 0.7, "7": 0.2}), "8": pytest.approx({"5": 0.9, "0": 0.1}), "85": {}}
    assert unread_branches(tables) == ["7"]  # the table after "7" was never shown
    assert weighted_score(positions[0]) < 10  # what the one-token reading said


def test_where_the_model_ended_the_number_ends_and_where_max_tokens_cut_it_the_table_is_unknown():
    first = logs({" 7": 0.9, "x": 0.1})  # a first answer token may carry a space
    assert path_tables(Completion([" 7"], [first], stopped=True)) == {"": pytest.approx({"7": 0.9}), "7": {}}
    assert path_tables(Completion([" 7"], [first], stopped=False)) == {"": pytest.approx({"7": 0.9})}
    after_1 = path_tables(Completion(["0", "0"], [logs({"0": 0.8, "5": 0.2}), logs({"0": 1.0})], stopped=False), "1")
    assert after_1 == {"1": pytest.approx({"0": 0.8, "5": 0.2}), "10": pytest.approx({"0": 1.0})}  # no space stripped after "1"


def test_table_distance_is_total_variation():
    assert table_distance(logs({"a": 0.5, "b": 0.5}), logs({"a": 0.5, "b": 0.5})) == pytest.approx(0)
    assert table_distance(logs({"a": 0.6, "b": 0.4}), logs({"a": 0.5, "c": 0.5})) == pytest.approx(0.5 * (0.1 + 0.4 + 0.5))


def teach(backbone, answers: dict[str, str], steps: int = 150):
    """Train the tiny model to answer each judge prompt with its number (then end of text)."""
    model = backbone.model.train()
    texts = [backbone.chat(chat_prompt(fill_rubric(RUBRIC, "", a))) for a in answers]
    batch = make_batch(backbone, texts, [n + backbone.tokenizer.eos_token for n in answers.values()])
    labels = batch.input_ids.masked_fill(~batch.response_mask, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(steps):
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_local_judge_reads_two_and_three_digit_scores_on_a_digit_splitting_tokenizer(arch):
    backbone = tiny_backbone(arch)
    assert digit_tokens(backbone.tokenizer) is not None  # characters: "85" is two tokens
    answers = {"good pirate talk": "85", "perfect pirate talk": "100", "plain talk": "12"}
    teach(backbone, answers)
    judge = LocalJudge(backbone, RUBRIC)
    scores = judge.score([""] * 3, list(answers))
    assert scores == pytest.approx([85, 100, 12], abs=3)
    one_token = [weighted_score(t) for t in judge.top_logprobs([fill_rubric(RUBRIC, "", a) for a in answers])]
    assert all(s is not None and s < 10 for s in one_token)  # the old reading: first digit only


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_local_judge_tables_from_the_kv_cache_equal_full_forwards(arch):
    backbone = tiny_backbone(arch)
    judge = LocalJudge(backbone, RUBRIC, batch_size=2)
    prompts = [fill_rubric(RUBRIC, "", a) for a in ("arr matey, a long answer to push past the window", "no")]
    tables = judge.digit_tables(prompts)
    ids = [backbone.tokenizer.encode(d, add_special_tokens=False)[0] for d in DIGITS]
    for prompt, table in zip(prompts, tables):
        text = backbone.chat(chat_prompt(prompt))
        for prefix in ("", "3", "1", "10"):
            with torch.no_grad():
                probs = torch.softmax(backbone.model(input_ids=make_batch(backbone, [text + prefix]).input_ids).logits[0, -1], -1)
            assert [table[prefix][d] for d in DIGITS] == pytest.approx(probs[ids].tolist(), abs=1e-5)
