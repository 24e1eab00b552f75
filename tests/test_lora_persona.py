"""`lora extract` reuses pairs.jsonl and the pos/neg adapters in --out only when they were made with the same settings."""

import json

from conftest import tiny_backbone

from personactl.extraction import ExtractionSettings
from personactl.lora import persona
from personactl.lora.config import LoRATrainConfig
from personactl.traits import load_trait


def test_pairs_and_adapters_are_reused_only_when_their_settings_match(tmp_path, monkeypatch):
    backbone = tiny_backbone("llama")
    made = {"pairs": 0, "adapters": 0}
    real_pairs, real_train = persona.generate_pairs, persona.train_lora

    def counted_pairs(*args, **kwargs):
        made["pairs"] += 1
        return real_pairs(*args, **kwargs)

    def counted_train(*args, **kwargs):
        made["adapters"] += 1
        return real_train(*args, **kwargs)

    monkeypatch.setattr(persona, "generate_pairs", counted_pairs)
    monkeypatch.setattr(persona, "train_lora", counted_train)
    settings = ExtractionSettings(max_new_tokens=2, n_questions=1)
    small = dict(alpha=4.0, max_steps=1, batch_size=4, target_modules=("q_proj",))
    train = LoRATrainConfig(rank=2, **small)
    out = tmp_path / "lora"

    def extract(trait="pirate", settings=settings, train=train):
        made.update(pairs=0, adapters=0)
        direction = persona.extract_lora_direction(backbone, load_trait(trait), out, settings=settings, train=train)
        return direction, dict(made)

    first, counts = extract()
    assert counts == {"pairs": 1, "adapters": 2} and first.metadata["trait"] == "pirate"
    assert extract()[1] == {"pairs": 0, "adapters": 0}  # same settings: an interrupted run resumes

    direction, counts = extract(train=LoRATrainConfig(rank=3, **small))
    assert counts == {"pairs": 0, "adapters": 2} and direction.rank == 6  # other rank: the same pairs, new adapters

    direction, counts = extract(trait="silly")
    assert counts == {"pairs": 1, "adapters": 2} and direction.metadata["trait"] == "silly"
    pair_questions = {json.loads(line)["question"] for line in (out / "pairs.jsonl").read_text().splitlines()}
    assert pair_questions <= set(load_trait("silly").questions)
    assert json.loads((out / "pos" / "persona.json").read_text())["trait"] == "silly"

    (out / "pairs.jsonl").write_text((out / "pairs.jsonl").read_text().replace('"pos_answer": "', '"pos_answer": "x'))
    # pairs.jsonl edited since: made afresh; the new pairs equal those the adapters were trained on, so they stay
    assert extract(trait="silly")[1] == {"pairs": 1, "adapters": 0}
    assert extract(trait="silly", settings=ExtractionSettings(max_new_tokens=3, n_questions=1))[1] == {"pairs": 1, "adapters": 2}
