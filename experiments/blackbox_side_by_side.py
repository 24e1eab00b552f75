"""White-box and black-box steering side by side on SmolLM2 (pirate): one sweep, one judge, one set of questions.

Methods: HF activation steering (`vector`), llama.cpp control vectors
(`llamacpp-vector`, when registered), and three methods that need no access to
the model's internals, run through llama-cpp-python's OpenAI-compatible server
serving the same embedded GGUF on 127.0.0.1: parameter modulation
(`modulation`), the system-prompt persona (`api-prompt`) and few-shot examples
from the extraction answers (`fewshot`). Trait and coherence vs coefficient
with 95% CIs over questions, offline judge; each method's line is the shared verdict
(verdicts.sweep_verdicts). Writes runs/blackbox-side-by-side*/ and a section of
docs/experiments.md.

Run: OMP_NUM_THREADS=1 .venv/bin/python experiments/blackbox_side_by_side.py
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from _doc import write_section

from personactl import load_model
from personactl.blackbox.llamacpp_server import llamacpp_server
from personactl.evaluate import validate_config
from personactl.experiment import run
from personactl.methods import GenerationSettings, MethodContext, available_methods
from personactl.models import EMBEDDED_MODELS
from personactl.traits import load_trait
from personactl.verdicts import NO_EFFECT

BLACK_BOX = ["modulation", "api-prompt", "fewshot"]


def ci(mean: float, lo: float, hi: float) -> str:
    return f"{mean:.1f} [{lo:.1f}, {hi:.1f}]"


ORDER = ["vector", "llamacpp-vector", *BLACK_BOX]


def conclusion(verdicts: dict[str, dict], sampling: dict[str, dict]) -> str:
    """The sentence the numbers support, from the stored verdicts (Verdict.to_dict) and modulation's parameters per coefficient."""
    mod = verdicts.get("modulation")
    risen = [m for m, v in verdicts.items() if v["verdict"] != NO_EFFECT]
    flat = [m for m, v in verdicts.items() if v["verdict"] == NO_EFFECT]
    top = max(sampling, key=float)
    text = f"Moved the trait (paired CI by question above 0, verdicts.py): {', '.join(risen) or 'none'}; no measurable effect: {', '.join(flat) or 'none'}. "
    if mod is not None and mod["verdict"] == NO_EFFECT:
        s0, s = sampling[min(sampling, key=lambda c: abs(float(c)))], sampling[top]
        text += (
            f"Parameter modulation does not move the trait: at {float(top):+g} it samples at temperature {s['temperature']:.2f} "
            f"(vs {s0['temperature']:.2f} at 0), top_p {s['top_p']:g} and repetition penalty {s['repetition_penalty']:g}; that changes how "
            "random the answers are, not which way they lean, since no sampling parameter knows the persona's direction. "
            "Without activation access, the persona has to travel in the text: the system prompt and few-shot examples."
        )
    elif mod is not None:
        text += f"Parameter modulation: {mod['line']}; read it against the coherence column: a temperature rise also moves the offline judge."
    return text


def note(data: dict) -> str:
    """The section's note, from the stored settings, verdicts and modulation parameters (no number written by hand)."""
    st = data["settings"]
    verdicts = {v["method"]: v for v in data["verdicts"]}
    return (
        f"Pirate vector of the demo (`{st['vector']}`), layer {st['layer']}; {st['questions']} held-out questions x {st['samples']} samples at "
        f"temperature {st['temperature']:g}, {st['max_new_tokens']} tokens; offline judge (held-out accuracy "
        f"{st['judge_heldout_accuracy']:.2f}); brackets: 95% CIs over questions (t on per-question means). `vector` steers the HF model's activations, `llamacpp-vector` "
        "adds the same vector as a llama.cpp control vector (llama-cpp-python in process); `modulation`, `api-prompt` and `fewshot` go "
        "through llama-cpp-python's OpenAI-compatible server serving the same GGUF (chat completions, per-row seeds). "
        f"Modulation: |v| at layer {st['layer']} is {st['magnitude']:.2f} tenths of the mean hidden-state norm there, so temperature = "
        f"{st['temperature']:g} + {st['magnitude']:.2f} x coef x 0.1 (clamped to [0, 1.5]); coef > 0 also sets top_p 0.9 and repetition "
        "penalty 1.1 (coherence here is the repetition-based score, which that penalty flatters). Few-shot: 2 x |coef| "
        "(question, pirate answer) turns from the extraction answers. "
        + (st["llamacpp_note"] + " " if st.get("llamacpp_note") else "")
        + f"Run time {st['minutes']:.1f} min on 2 CPU cores.\n\n"
        + "\n".join(f"- {verdicts[m]['line']}" for m in ORDER if m in verdicts)
        + "\n\n"
        + conclusion(verdicts, data["modulation_sampling"])
    )


def _records(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in out.glob("blackbox-side-by-side*/results.jsonl"))


def _run_minutes(out: Path, minutes: float, generated: bool) -> float:
    """The time of the run that generated the answers (a resumed run with nothing left to do keeps the stored one)."""
    path = out / "blackbox-side-by-side" / "timing.json"
    if generated or not path.exists():
        path.write_text(json.dumps({"minutes": minutes}))
    return json.loads(path.read_text())["minutes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vector", type=Path, default=Path("runs/demo-pirate/vector.safetensors"))
    parser.add_argument("--layer", type=int, default=25, help="the demo's measured layer")
    parser.add_argument("--coefs", default="0,1,2")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=Path("runs"))
    args = parser.parse_args()
    if not args.vector.exists() or not args.vector.with_suffix(".pairs.jsonl").exists():
        raise SystemExit(f"{args.vector} and its .pairs.jsonl are needed: run `personactl demo` (or extract) first")

    coefs = [float(c) for c in args.coefs.split(",")]
    base = {
        "model": "smollm2-135m",
        "trait": "pirate",
        "vector": str(args.vector),
        "layers": [args.layer],
        "coefs": coefs,
        "n_questions": args.questions,
        "samples": args.samples,
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "judge": "embed",
        "batch_size": 48,
    }
    backbone = load_model("smollm2-135m")
    have_llamacpp = "llamacpp-vector" in available_methods()
    done_before = _records(args.out)
    started = time.monotonic()
    os.environ.setdefault("PERSONACTL_API_KEY", "none")
    with llamacpp_server(EMBEDDED_MODELS["smollm2-135m"].locate(), args.out / "blackbox-side-by-side" / "server.log") as url:
        os.environ["PERSONACTL_API_BASE_URL"] = url
        main_run = run(
            validate_config({**base, "name": "blackbox-side-by-side", "methods": ["vector", *BLACK_BOX], "backend": "openai:smollm2"}),
            args.out,
            backbone=backbone,
            report=False,
        )
    results = [main_run]
    llamacpp_note = "llama.cpp control vectors (`llamacpp-vector`) were not registered when this ran: not included."
    if have_llamacpp:
        try:
            results.append(
                run(
                    validate_config({**base, "name": "blackbox-side-by-side-llamacpp", "methods": ["llamacpp-vector"]}),
                    args.out,
                    backbone=backbone,
                    report=False,
                )
            )
            llamacpp_note = ""
        except Exception as exc:  # noqa: BLE001 - another helper's method: report, keep the rest
            llamacpp_note = f"`llamacpp-vector` failed here ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}): not included."
    minutes = _run_minutes(args.out, (time.monotonic() - started) / 60, _records(args.out) > done_before)

    # the parameters modulation sent, per coefficient (as ModulationMethod computes them)
    ctx = MethodContext(
        backbone,
        load_trait("pirate"),
        main_run.prepared.vector,
        GenerationSettings(args.max_new_tokens, args.temperature),
        options={"backend": "openai:smollm2"},
        pairs=main_run.prepared.pairs,
    )
    from personactl.blackbox.modulation import ModulationMethod, hidden_norms, magnitude

    sampling = {c: s.to_dict() for c, s in zip(coefs, ModulationMethod(ctx).samplings(coefs, args.layer))}
    mag = magnitude(ctx.vector, args.layer, hidden_norms(backbone, ctx.vector, ctx.pairs))

    summary = [row for r in results for row in r.summary]
    records = [rec for r in results for rec in r.records]
    verdicts = {v.method: v for r in results for v in r.verdicts}
    rows = []
    for row in sorted(summary, key=lambda r: (ORDER.index(r["method"]) if r["method"] in ORDER else 99, r["coef"])):
        m, c = row["method"], float(row["coef"])
        example = next(
            (r["answer"] for r in records if r["method"] == m and float(r["coef"]) == c and r["question_id"] == 0 and r["sample"] == 0), ""
        )
        params = (
            f"T {sampling[c]['temperature']:.2f}, top_p {sampling[c]['top_p']:g}, rep {sampling[c]['repetition_penalty']:g}"
            if m == "modulation"
            else f"T {args.temperature:g}"
        )
        rows.append(
            {
                "method": m,
                "coef": f"{c:+g}",
                "sampling": params,
                "trait": ci(row["trait_mean"], row["trait_lo"], row["trait_hi"]),
                "coherence": ci(row["coherence_mean"], row["coherence_lo"], row["coherence_hi"]),
                "example (question 1)": example[:80].replace("|", "/").replace("\n", " "),
            }
        )
        print(rows[-1])
    judge = main_run.prepared.judges.trait
    settings = {
        "vector": str(args.vector),
        "layer": args.layer,
        "coefs": coefs,
        "questions": args.questions,
        "samples": args.samples,
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
        "magnitude": mag,
        "judge_heldout_accuracy": getattr(judge, "heldout_accuracy", None),
        "minutes": minutes,
        "llamacpp_note": llamacpp_note,
    }
    data = {
        "settings": settings,
        "modulation_sampling": {str(c): s for c, s in sampling.items()},
        "verdicts": [verdicts[m].to_dict() for m in ORDER if m in verdicts],
        "summary": summary,
    }
    print(write_section("blackbox_side_by_side", "White-box and black-box steering side by side (pirate, SmolLM2-135M)", rows, note(data), data=data))


if __name__ == "__main__":
    main()
