import json

import pytest
import yaml

from personactl import ContrastiveTexts, Trait, TraitError, builtin_traits, load_trait


def _questions(n, prefix="q"):
    return [f"{prefix} {i}?" for i in range(n)]


def _trait_dict(**over):
    data = {
        "name": "tiny",
        "instructions": [{"pos": f"be it {i}", "neg": f"do not be it {i}"} for i in range(5)],
        "questions": _questions(20),
        "eval_questions": _questions(10, "e"),
        "rubric": "Q: {question} A: {answer} Score 0-100.",
    }
    data.update(over)
    return data


def test_builtin_traits_are_all_valid():
    names = builtin_traits()
    assert {"pirate", "silly", "optimistic", "evil", "sycophantic", "hallucinating", "honest"} <= set(names)
    for name in names:
        trait = load_trait(name)
        assert isinstance(trait, Trait) and trait.name == name
        assert not set(trait.questions) & set(trait.eval_questions)


def test_user_file_json_and_yaml(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps(_trait_dict()))
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(_trait_dict(name="yamlish")))
    assert load_trait(tmp_path / "t.json").name == "tiny"
    assert load_trait(str(tmp_path / "t.yaml")).name == "yamlish"


def test_persona_vectors_repository_format_loads_as_is(tmp_path):
    original = {
        "instruction": [{"pos": f"You are evil {i}.", "neg": f"You are kind {i}."} for i in range(5)],
        "questions": _questions(40),
        "eval_prompt": "Is this evil? {question} {answer} Respond with a number 0-100.",
    }
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(original))
    trait = load_trait(path)
    assert trait.name == "evil"
    assert len(trait.questions) == 30 and len(trait.eval_questions) == 10
    assert trait.questions + trait.eval_questions == original["questions"]
    assert trait.judge_prompt("Q?", "A!") == "Is this evil? Q? A! Respond with a number 0-100."


def test_contrastive_texts_trait(tmp_path):
    path = tmp_path / "formal.json"
    path.write_text(json.dumps({"positive_texts": ["Arr matey"], "negative_texts": ["Good day."]}))
    trait = load_trait(path)
    assert isinstance(trait, ContrastiveTexts) and trait.name == "formal"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"instructions": []}, "instructions"),
        ({"questions": _questions(3)}, "questions"),
        ({"eval_questions": _questions(10)}, "also appear"),
        ({"rubric": "no placeholders"}, "placeholder"),
        ({"questions": [""] * 20}, "empty"),
    ],
)
def test_bad_traits_say_what_is_wrong(tmp_path, change, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_trait_dict(**change)))
    with pytest.raises(TraitError, match=message):
        load_trait(path)


def test_empty_and_unreadable_trait_files(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with pytest.raises(TraitError, match="invalid trait"):
        load_trait(empty)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(TraitError, match="cannot read"):
        load_trait(broken)
    with pytest.raises(TraitError, match="no trait 'nonexistent'"):
        load_trait("nonexistent")
    uneven = tmp_path / "uneven.json"
    uneven.write_text(json.dumps({"positive_texts": ["a", "b"], "negative_texts": ["c"]}))
    with pytest.raises(TraitError, match="one negative per positive"):
        load_trait(uneven)
