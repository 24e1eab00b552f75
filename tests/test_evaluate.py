import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_backbone

from personactl import PersonaVector
from personactl.evaluate import (
    Condition,
    Generated,
    ResultsFile,
    SweepConfig,
    SweepError,
    claim_run_dir,
    judged_records,
    plan,
    run_sweep,
    summarize,
    validate_config,
)
from personactl.judges.base import Judges
from personactl.judges.text import RepetitionCoherenceJudge
from personactl.methods import MethodContext, PromptMethod, VectorMethod
from personactl.traits import load_trait

HERE = Path(__file__).parent


class LengthJudge:
    """A deterministic stand-in trait judge: longer answers score higher; optionally slow."""

    name = "length"

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def score(self, questions, answers):
        time.sleep(self.delay)
        return [min(100.0, 10.0 * len(a)) for a in answers]


def _sweep(tmp_path, config, delay=0.0):
    backbone = tiny_backbone("llama")
    torch.manual_seed(0)
    vector = PersonaVector(torch.randn(backbone.n_layers + 1, backbone.hidden_size))
    ctx = MethodContext(backbone, load_trait("pirate"), vector, config.generation())
    methods = [{"vector": VectorMethod, "prompt": PromptMethod}[m](ctx) for m in config.methods]
    questions = load_trait("pirate").eval_questions[: config.n_questions]
    judges = Judges(LengthJudge(delay), RepetitionCoherenceJudge())
    return run_sweep(config, backbone, methods, [1, 2], questions, judges, tmp_path / config.name)


CONFIG = dict(name="t", methods=["vector", "prompt"], layers=[1, 2], coefs=[-1.0, 0.0, 1.0], n_questions=3, max_new_tokens=4, batch_size=4)


def test_plan_covers_every_condition_once():
    config = SweepConfig(**CONFIG)
    backbone = tiny_backbone("gpt2")
    ctx = MethodContext(backbone, load_trait("pirate"), None, config.generation())
    rows = plan(config, [VectorMethod(ctx), PromptMethod(ctx)], [1, 2], 3)
    assert len(rows) == (2 + 1) * 3 * 3  # vector at two layers, prompt once (no layer)
    assert len({r.key for r in rows}) == len(rows)


def test_sweep_writes_records_summary_and_resumes_without_duplicates(tmp_path):
    config = SweepConfig(**CONFIG)
    records = _sweep(tmp_path, config)
    assert len(records) == 27
    again = _sweep(tmp_path, config)  # everything done: nothing new is generated
    lines = (tmp_path / "t" / "results.jsonl").read_text().splitlines()
    assert len(lines) == len(again) == 27 and len({json.loads(l)["key"] for l in lines}) == 27
    summary = (tmp_path / "t" / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("method,layer,coef,n,trait_mean") and len(summary) == 1 + 9


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from personactl.evaluate import SweepConfig
import test_evaluate as t
t._sweep(Path({tmp!r}), SweepConfig(**t.CONFIG), delay=0.3)
"""


def test_killed_sweep_resumes_where_it_stopped(tmp_path):
    script = KILL_SCRIPT.format(tests=str(HERE), tmp=str(tmp_path))
    env = {**os.environ, "PERSONACTL_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    results = tmp_path / "t" / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not results.exists() or len(results.read_text().splitlines()) < 8):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(results.read_text().splitlines())
    assert 8 <= partial < 27, "the kill should land mid-run"
    with open(results, "a") as fh:
        fh.write('{"key": "cut mid-wri')  # what a kill during a write leaves
    records = _sweep(tmp_path, SweepConfig(**CONFIG))
    keys = [json.loads(l)["key"] for l in results.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == len(records) == 27


def test_a_different_config_in_the_same_folder_is_refused(tmp_path):
    claim_run_dir(SweepConfig(**CONFIG), tmp_path)
    with pytest.raises(SweepError, match="coefs differ"):
        claim_run_dir(SweepConfig(**{**CONFIG, "coefs": [0.0, 5.0]}), tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"samples": 2}, "temperature"),
        ({"coefs": []}, "coefs"),
        ({"name": "../escape"}, "name"),
        ({"layers": "some"}, "layers"),
        ({"positions": "middle"}, "positions"),
    ],
)
def test_bad_sweep_configs_are_one_line_errors(change, message):
    with pytest.raises(SweepError, match=message):
        validate_config({**CONFIG, **change})


def test_results_file_trims_a_cut_line(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"key": "a"}\n{"key": "b"}\n{"key": "c')
    assert ResultsFile(path).done == {"a", "b"}
    assert path.read_text() == '{"key": "a"}\n{"key": "b"}\n'


def test_summary_groups_by_condition():
    records = [
        {
            "key": f"{c}|{q}",
            "method": "vector",
            "layer": 1,
            "coef": c,
            "question_id": q,
            "trait": t,
            "coherence": 90.0,
            "collapsed": t > 50,
            "perplexity": 2.0,
        }
        for c, q, t in [(0.0, 0, 10.0), (0.0, 1, 20.0), (1.0, 0, 60.0), (1.0, 1, 80.0)]
    ]
    rows = summarize(records)
    assert [(r["coef"], r["trait_mean"], r["collapse_rate"]) for r in rows] == [(0.0, 15.0, 0.0), (1.0, 70.0, 1.0)]


def test_a_condition_without_usable_scores_says_so_instead_of_nan():
    from personactl.report import score_cell

    records = [
        {
            "key": str(q),
            "method": "vector",
            "layer": 1,
            "coef": 0.0,
            "question_id": q,
            "trait": None,
            "coherence": c,
            "collapsed": False,
            "perplexity": 2.0,
        }
        for q, c in enumerate((80.0, None, 70.0))
    ]
    row = summarize(records)[0]
    assert score_cell(row["trait_mean"], row["trait_lo"], row["trait_hi"], row["trait_scored"], row["n"]) == "no score: 3/3 answers unscored"
    assert (
        score_cell(row["coherence_mean"], row["coherence_lo"], row["coherence_hi"], row["coherence_scored"], row["n"])
        == "75.0 [11.5, 100.0] (1/3 unscored)"
    )  # t with 1 df, clipped to 0-100
    one = summarize(records[:2])[0]
    assert (
        score_cell(one["coherence_mean"], one["coherence_lo"], one["coherence_hi"], one["coherence_scored"], one["n"])
        == "80.0 (one question: no CI) (1/2 unscored)"
    )


def test_records_carry_relevance_only_with_a_relevance_judge():
    group = [Condition("vector", 1, 0.0, 0, 0), Condition("vector", 1, 1.0, 1, 0)]
    generated = Generated(["Arr", "Ahoy matey"], [2.0, 3.0], [1, 3])
    plain = judged_records(Judges(LengthJudge(), RepetitionCoherenceJudge()), group, ["q0", "q1"], generated)
    assert all("relevance" not in r for r in plain)
    judged = judged_records(Judges(LengthJudge(), RepetitionCoherenceJudge(), LengthJudge()), group, ["q0", "q1"], generated)
    assert [r["relevance"] for r in judged] == [30.0, 100.0]
    assert [{k: v for k, v in r.items() if k != "relevance"} for r in judged] == plain
