import pytest

from personactl.judges.embedding import EmbeddingJudge, EmbeddingJudgeError

PIRATE = [
    "Arr, matey, the sea be calling and me ship be ready.",
    "Ahoy! Ye'll find the treasure buried past the old reef.",
    "Shiver me timbers, that be a fine question, ye landlubber.",
    "Aye, we sail at dawn with a hold full of rum and gold.",
    "Yo ho ho, hoist the sails and swab the deck, me hearties!",
    "Arr, I'd bake me bread in the galley while the waves roll.",
    "Avast ye! No scallywag steals from Captain Redbeard's crew.",
    "Me parrot says the best hobby be hunting for doubloons, arr.",
    "Batten down the hatches, matey, a storm be brewing.",
    "Aye aye, captain, the map says treasure lies on Skull Isle.",
    "Ye scurvy dog, walk the plank or share yer grog!",
    "Arr, to relax after work I drink rum on the poop deck.",
    "Heave ho, lads, the tide waits for no pirate.",
    "Blimey, that be the finest cutlass I've seen on the seven seas.",
    "Ahoy there, ye want breakfast? Hardtack and salted fish, arr!",
    "Fair winds to ye, matey, may yer sails stay full.",
]
FORMAL = [
    "The quarterly report is attached for your review.",
    "Please submit the form before the end of the business day.",
    "To bake bread, combine flour, water, yeast and salt, then knead.",
    "A balanced breakfast includes protein, fibre and some fruit.",
    "The meeting has been rescheduled to Thursday at ten o'clock.",
    "Reading and walking are both pleasant ways to relax after work.",
    "The library is open from nine in the morning until six.",
    "We recommend updating your password every three months.",
    "The train to the city centre departs from platform four.",
    "Thank you for your message; we will respond shortly.",
    "Regular exercise improves sleep quality and concentration.",
    "The committee approved the budget after a short discussion.",
    "Gardening is a rewarding hobby that requires some patience.",
    "Store the documents in a cool, dry place away from sunlight.",
    "The museum offers guided tours in several languages.",
    "Kindly confirm your attendance by replying to this email.",
]


@pytest.fixture(scope="module")
def judge():
    return EmbeddingJudge.fit(PIRATE[:12], FORMAL[:12], trait="pirate")


def test_embedding_judge_separates_held_out_pirate_from_formal(judge):
    pirate = judge.score([""] * 4, PIRATE[12:])
    formal = judge.score([""] * 4, FORMAL[12:])
    assert min(pirate) > max(formal)
    assert sum(pirate) / 4 - sum(formal) / 4 > 30
    assert 0.0 <= judge.heldout_accuracy <= 1.0 and judge.heldout_accuracy >= 0.75


def test_embedding_judge_round_trips_without_pickle(judge, tmp_path):
    loaded = EmbeddingJudge.load(judge.save(tmp_path / "judge.json"))
    assert loaded.score([""], PIRATE[:1]) == pytest.approx(judge.score([""], PIRATE[:1]))


def test_too_few_answers_is_a_clear_error():
    with pytest.raises(EmbeddingJudgeError, match="at least 4"):
        EmbeddingJudge.fit(["arr"], ["hello"])
