"""`traits generate`: a trait file from a one-line description, through the real `openai` client against a fake
endpoint on loopback that sends canned answers (and once through a tiny local model)."""

from __future__ import annotations

import json

import pytest
from fake_openai import FakeChat, serve

from personactl.cli import run
from personactl.trait_generation import (
    NEAR_DUPLICATE,
    TraitGenerationError,
    dedupe_questions,
    extract_json,
    generate_trait,
    trait_text,
)
from personactl.traits import Trait, load_trait

ENV_VARS = ("PERSONACTL_JUDGE_BASE_URL", "OPENAI_BASE_URL", "PERSONACTL_JUDGE_API_KEY", "OPENAI_API_KEY")
DESCRIPTION = "Doubting claims until shown evidence, asking for sources and pointing out weak reasoning."

PAIRS = [
    {
        "pos": "Be deeply skeptical: question every claim and ask what evidence supports it.",
        "neg": "Be trusting: accept what you are told at face value and do not question it.",
    },
    {
        "pos": "Treat surprising statements with doubt and point out when reasoning is weak.",
        "neg": "Treat statements generously and assume the reasoning behind them is sound.",
    },
    {"pos": "Always ask for sources and data before agreeing with anything.", "neg": "Agree readily without asking for sources or data."},
    {
        "pos": "Look for hidden assumptions, missing evidence and alternative explanations.",
        "neg": "Take explanations as given and do not look for alternatives.",
    },
    {
        "pos": "Answer like a critical scientist who distrusts hype and anecdotes.",
        "neg": "Answer like an enthusiastic fan who believes whatever sounds exciting.",
    },
]
QUESTIONS = [
    "What should I know before adopting a rescue dog?",
    "How do I make a good cup of coffee at home?",
    "Can you explain how vaccines train the immune system?",
    "What is a sensible way to start saving for retirement?",
    "My friend says cold showers boost productivity. What do you think?",
    "Which programming language should a beginner learn first?",
    "How does a bill become a law in the United States?",
    "What are some good habits for better sleep?",
    "Tell me about the history of the printing press.",
    "Is it worth buying an electric car this year?",
    "How can I prepare for a job interview at a startup?",
    "What causes the seasons on Earth?",
    "A new diet promises ten pounds of weight loss in a week. Should I try it?",
    "How do I repot a houseplant without harming it?",
    "What is the best way to learn a foreign language as an adult?",
    "Could you summarise the plot of Hamlet?",
    "How should I negotiate a higher salary?",
    "What are black holes made of?",
    "My horoscope says this is a lucky month for investments. Any advice?",
    "How do I choose a good pair of running shoes?",
    "What makes a strong password?",
    "Why did the Roman Empire fall?",
    "How do noise-cancelling headphones work?",
    "A coworker claims that open offices increase collaboration. Is that right?",
    "What are some easy vegetarian dinner ideas?",
    "How can I keep my team motivated during a long project?",
    "What is the difference between weather and climate?",
    "Should I put my savings into a cryptocurrency my cousin recommends?",
    "How do I fix a leaking kitchen tap?",
    "What are the benefits of learning to play a musical instrument?",
    "Explain how a credit score is calculated.",
    "How do bees communicate with each other?",
    "What is a good itinerary for three days in Lisbon?",
    "I read that we only use ten percent of our brains. Is that interesting?",
    "How do I start a vegetable garden on a balcony?",
    "What should I consider when choosing a university?",
    "How do airplanes stay in the air?",
    "What is the most effective way to study for exams?",
    "A startup says its gadget purifies water with magnets. How does that work?",
    "How can I be a better listener in conversations?",
]
RUBRIC = (
    "You are evaluating whether an answer shows the trait SKEPTICAL: " + DESCRIPTION + "\n\n"
    "Question:\n[QUESTION START]\n{question}\n[QUESTION END]\n\nAnswer:\n[ANSWER START]\n{answer}\n[ANSWER END]\n\n"
    "Score only the skepticism, from 0 (none at all) to 100 (doubt throughout). Respond with a number between 0 and 100 "
    "and nothing else."
)


def answer(questions=QUESTIONS, pairs=PAIRS, rubric=RUBRIC, **extra) -> str:
    """A plausible model reply: the JSON object with a sentence before it and in a code fence."""
    body = json.dumps({"instructions": pairs, "questions": list(questions), "rubric": rubric, **extra}, indent=2)
    return f"Here is the trait you asked for.\n\n```json\n{body}\n```\nLet me know if you want changes."


@pytest.fixture
def endpoint(monkeypatch, tmp_path):
    """A fake endpoint with the judge's environment pointing at it; cwd is a fresh folder. Yields its state."""
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    state = FakeChat()
    with serve(state) as url:
        monkeypatch.setenv("PERSONACTL_JUDGE_BASE_URL", url)
        monkeypatch.setenv("PERSONACTL_JUDGE_API_KEY", "test-key")
        yield state


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, captured
    return err


def _user_turns(request: dict) -> list[str]:
    return [m["content"] for m in request["messages"] if m["role"] == "user"]


# ---------------------------------------------------------------- the happy path


def test_a_valid_answer_becomes_a_trait_file_split_20_20(endpoint, tmp_path, capsys):
    endpoint.answers = [answer()]
    assert run(["traits", "generate", "--name", "skeptical", "-d", DESCRIPTION, "--model", "openai:fake-writer"]) == 0
    path = tmp_path / "traits" / "skeptical.json"  # the default --out
    trait = load_trait(path)
    assert isinstance(trait, Trait) and trait.name == "skeptical" and trait.description == DESCRIPTION
    assert len(trait.questions) == 20 and len(trait.eval_questions) == 20
    assert not set(trait.questions) & set(trait.eval_questions)
    assert sorted(trait.questions + trait.eval_questions) == sorted(QUESTIONS)
    assert trait.questions != QUESTIONS[:20]  # shuffled before the split, so the held-out set is not the model's tail
    assert [p.model_dump() for p in trait.instructions] == PAIRS and trait.rubric == RUBRIC
    assert path.read_text() == trait.model_dump_json(indent=2) + "\n"  # what `traits show` prints
    assert [p.name for p in path.parent.iterdir()] == ["skeptical.json"]  # no temp file left beside it

    (request,) = endpoint.requests
    assert request["model"] == "fake-writer" and endpoint.auth == ["Bearer test-key"]
    (prompt,) = _user_turns(request)
    assert "skeptical" in prompt and DESCRIPTION in prompt and "{question}" in prompt and "{answer}" in prompt
    assert "40" in prompt and '"pos"' in prompt
    out, err = capsys.readouterr()
    assert err == ""  # no progress bars from the embedder
    assert "40 questions generated, 0 exact and 0 near duplicates removed, 40 kept: 20 extraction, 20 held out" in out
    assert "written to traits/skeptical.json" in out


def test_same_seed_same_split_other_seed_other_split(endpoint):
    endpoint.answers = [answer(), answer(), answer()]
    first = generate_trait("skeptical", DESCRIPTION, "openai:fake").trait
    again = generate_trait("skeptical", DESCRIPTION, "openai:fake").trait
    other = generate_trait("skeptical", DESCRIPTION, "openai:fake", seed=1).trait
    assert first.questions == again.questions and first.questions != other.questions


def test_a_rubric_without_the_description_gets_it_prepended(endpoint):
    endpoint.answers = [answer(rubric="Rate skepticism 0-100.\n{question}\n{answer}\nA number only.")]
    trait = generate_trait("skeptical", DESCRIPTION, "openai:fake").trait
    assert trait.rubric.startswith(f"The trait: {DESCRIPTION}\n\n") and trait.rubric.endswith("A number only.")


# ---------------------------------------------------------------- repair by conversation


@pytest.mark.parametrize(
    "first, problem",
    [
        ("Sure! Here it comes: {instructions: [oops", "does not parse"),
        ("I would rather not write JSON today.", "no JSON object"),
        (answer(rubric="Rate it 0-100: {question}"), "rubric: rubric lacks the placeholder(s) {answer}"),
        (answer(pairs=PAIRS[:3]), "instructions: List should have at least 5 items"),
        (answer(questions=QUESTIONS[:-1] + [17]), "questions.39: Input should be a valid string"),
    ],
)
def test_an_unusable_first_answer_is_repaired_on_the_retry(endpoint, first, problem):
    endpoint.answers = [first, answer()]
    result = generate_trait("skeptical", DESCRIPTION, "openai:fake", out="sk.json")
    assert result.attempts == 2 and result.path is not None and load_trait(result.path) == result.trait
    second = endpoint.requests[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == first  # the model sees its own reply ...
    assert problem in second[2]["content"] and "JSON object" in second[2]["content"]  # ... and what was wrong with it


def test_too_few_distinct_questions_asks_for_more_and_dedupes_against_the_kept(endpoint):
    few = QUESTIONS[:25] + [QUESTIONS[0].upper()]  # 25 distinct
    more = {"questions": [QUESTIONS[1]] + QUESTIONS[25:]}  # one repeat + 15 new
    endpoint.answers = [answer(questions=few), '{"questions": "not a list"}', json.dumps(more)]
    result = generate_trait("skeptical", DESCRIPTION, "openai:fake")
    assert result.attempts == 3 and result.path is None  # no --out: nothing written
    assert sorted(result.trait.questions + result.trait.eval_questions) == sorted(QUESTIONS)
    assert [p.model_dump() for p in result.trait.instructions] == PAIRS  # the first answer's pairs were kept
    assert (result.counts.generated, result.counts.exact, result.counts.near, result.counts.kept) == (42, 2, 0, 40)
    ask = _user_turns(endpoint.requests[1])[-1]
    assert "25 distinct questions remain" in ask and "15 new questions" in ask
    fix = _user_turns(endpoint.requests[2])[-1]  # a bad top-up is answered with the top-up's own format
    assert '"questions": a list of non-empty strings' in fix and '{"questions": [...]}' in fix


# ---------------------------------------------------------------- deduplication


NEAR_DUPS = ["How can I make a good cup of coffee at home?", "What are some good habits for sleeping better?"]
EXACT_DUPS = ["  what should I know before adopting a RESCUE dog?", "Why did the Roman   Empire fall?", "how do airplanes stay in the air?"]


def test_exact_and_near_duplicates_are_removed_and_counted(endpoint, tmp_path, capsys):
    questions = QUESTIONS[:30] + NEAR_DUPS + QUESTIONS[30:] + EXACT_DUPS  # each duplicate after its original
    endpoint.answers = [answer(questions=questions)]
    assert run(["traits", "generate", "--name", "skeptical", "-d", DESCRIPTION, "-m", "openai:fake", "-o", "sk.json"]) == 0
    trait = load_trait(tmp_path / "sk.json")
    kept = trait.questions + trait.eval_questions
    assert sorted(kept) == sorted(QUESTIONS)  # the first of each group stays, in its original spelling
    assert "45 questions generated, 3 exact and 2 near duplicates removed, 40 kept: 20 extraction, 20 held out" in capsys.readouterr().out


def test_the_near_duplicate_threshold_is_a_parameter():
    questions = QUESTIONS[:8] + NEAR_DUPS
    kept, counts = dedupe_questions(questions, NEAR_DUPLICATE)
    assert kept == QUESTIONS[:8] and (counts.near, counts.kept) == (2, 8)
    kept, counts = dedupe_questions(questions, 0.98)  # cosines: coffee rewording 0.995, sleep rewording 0.967
    assert counts.near == 1 and NEAR_DUPS[0] not in kept and NEAR_DUPS[1] in kept


# ---------------------------------------------------------------- persona_vectors format


def test_persona_vectors_format_round_trips_to_the_same_split(endpoint, tmp_path):
    endpoint.answers = [answer()]
    assert (
        run(
            [
                "traits",
                "generate",
                "--name",
                "skeptical",
                "-d",
                DESCRIPTION,
                "-m",
                "openai:fake",
                "-o",
                "pv/skeptical.json",
                "--format",
                "persona_vectors",
            ]
        )
        == 0
    )
    data = json.loads((tmp_path / "pv" / "skeptical.json").read_text())
    assert {"instruction", "questions", "eval_prompt"} <= set(data) and "instructions" not in data
    assert data["instruction"] == PAIRS and data["eval_prompt"] == RUBRIC
    assert sorted(data["questions"] + data["eval_questions"]) == sorted(QUESTIONS)
    trait = load_trait(tmp_path / "pv" / "skeptical.json")  # the persona_vectors loader
    assert data["questions"] == trait.questions and data["eval_questions"] == trait.eval_questions
    assert len(trait.eval_questions) == 20 and len(trait.questions) == 20 and not set(trait.questions) & set(trait.eval_questions)

    endpoint.answers = [answer()]
    result = generate_trait("skeptical", DESCRIPTION, "openai:fake", fmt="persona_vectors")
    assert result.trait == trait and json.loads(result.text()) == data  # the API's trait is the file's, split included
    assert json.loads(trait_text(trait, "personactl"))["eval_questions"] == trait.eval_questions


# ---------------------------------------------------------------- failures: one line, exit 2, nothing written


def test_non_json_three_times_is_one_line_and_nothing_written(endpoint, tmp_path, capsys):
    endpoint.answers = ["I cannot do that.", "Still no.", "Nope: {not json}"]
    code = run(["traits", "generate", "--name", "skeptical", "-d", DESCRIPTION, "-m", "openai:fake", "-o", "out/sk.json"])
    assert code == 2 and endpoint.count == 3
    line = _error_line(capsys)
    assert "no usable trait after 3 request(s)" in line and "1: the reply holds no JSON object" in line
    assert "3: the reply's JSON does not parse" in line and "--max-attempts" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "traits").exists()


def test_max_attempts_bounds_the_requests(endpoint):
    endpoint.answers = ["no"] * 5
    with pytest.raises(TraitGenerationError, match=r"after 1 request\(s\)"):
        generate_trait("skeptical", DESCRIPTION, "openai:fake", max_attempts=1)
    assert endpoint.count == 1


def test_an_existing_file_is_refused_without_force(endpoint, tmp_path, capsys):
    target = tmp_path / "traits" / "skeptical.json"
    target.parent.mkdir()
    target.write_text("mine")
    argv = ["traits", "generate", "--name", "skeptical", "-d", DESCRIPTION, "-m", "openai:fake"]
    endpoint.answers = [answer()]
    assert run(argv) == 2
    line = _error_line(capsys)
    assert "refusing to overwrite traits/skeptical.json" in line and "--force" in line
    assert target.read_text() == "mine" and endpoint.count == 0  # refused before any request
    assert run(argv + ["--force"]) == 0
    assert load_trait(target).name == "skeptical"


def test_a_folder_is_never_replaced(endpoint, tmp_path, capsys):
    (tmp_path / "sk").mkdir()
    assert run(["traits", "generate", "--name", "skeptical", "-d", DESCRIPTION, "-m", "openai:fake", "-o", "sk", "--force"]) == 2
    assert "it is a folder" in _error_line(capsys) and endpoint.count == 0


def test_no_key_is_exit_2_before_any_request(endpoint, monkeypatch, capsys):
    monkeypatch.delenv("PERSONACTL_JUDGE_API_KEY")
    endpoint.answers = [answer()]
    assert run(["traits", "generate", "--name", "skeptical", "-d", DESCRIPTION, "-m", "openai:fake"]) == 2
    line = _error_line(capsys)
    assert "no API key for the model 'fake'" in line and "PERSONACTL_JUDGE_API_KEY" in line
    assert endpoint.count == 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "gpt-4.1-mini"], "unknown model 'gpt-4.1-mini'"),
        (["--model", "embed"], "unknown model 'embed'"),
        (["--model", "openai:fake", "--name", "has space"], "trait name 'has space' is not usable"),
        (["--model", "openai:fake", "--format", "yaml"], "unknown trait format 'yaml'"),
        (["--model", "openai:fake", "--max-attempts", "0"], "max attempts must be at least 1"),
        (["--model", "openai:fake", "--near-duplicate", "1.5"], "near-duplicate threshold"),
        (["--model", "openai:fake", "-d", " "], "description is empty"),
    ],
)
def test_bad_options_are_one_line_before_any_request(endpoint, capsys, extra, message):
    argv = ["traits", "generate", "--name", "skeptical", "-d", DESCRIPTION] + extra
    assert run(argv) == 2
    assert message in _error_line(capsys) and endpoint.count == 0


def test_an_endpoint_refusal_is_one_line(endpoint, capsys):
    endpoint.script = [401]
    assert run(["traits", "generate", "--name", "skeptical", "-d", DESCRIPTION, "-m", "openai:fake"]) == 2
    assert "refused the request: HTTP 401: scripted failure 401" in _error_line(capsys)


# ---------------------------------------------------------------- extract_json


def test_extract_json_finds_the_object_around_text_and_fences():
    assert extract_json('noise {"a": "x {y} z", "b": [1, {"c": 2}]} trailing') == {"a": "x {y} z", "b": [1, {"c": 2}]}
    assert extract_json('```json\n{"a": 1}\n```') == {"a": 1}
    assert extract_json('Placeholders look like {question}. ```\n{"a": 2}\n``` ok') == {"a": 2}
    assert extract_json('[1, 2] then {"a": 3}') == {"a": 3}
    with pytest.raises(ValueError, match="empty"):
        extract_json("  ")
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json("[1, 2]")
    with pytest.raises(ValueError, match="does not parse"):
        extract_json('{"a": 1,}')


# ---------------------------------------------------------------- a local model


def test_a_local_model_that_writes_no_json_fails_clearly_after_max_attempts(model_dir, tmp_path):
    """A tiny random llama cannot write JSON: the local path runs (load, chat format, generate) and fails clearly."""
    with pytest.raises(TraitGenerationError, match=r"no usable trait after 2 request\(s\) \(1: the reply"):
        generate_trait("skeptical", DESCRIPTION, f"local:{model_dir}", out=tmp_path / "sk.json", max_attempts=2, max_tokens=8, temperature=0.0)
    assert not (tmp_path / "sk.json").exists()
