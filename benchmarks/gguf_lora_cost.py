"""Per-token cost of a GGUF LoRA on the llama.cpp backend against rank and target modules, and of its cheaper forms:
the persona LoRA at a lower rank (truncated SVD of its delta) and the persona merged into the GGUF model's weights.

Run: .venv/bin/python benchmarks/gguf_lora_cost.py --lora runs/lora-pirate/diff
Batch 1, 2 pirate questions x 64 forced new tokens (prefill included); in each round every mode is timed back to back
with the unadapted model, and its cost is the median over the rounds of that paired time ratio (target <= 8%): a
machine shared with other jobs drifts between rounds, much less within a pair.
The rank x targets grid uses random factors (llama.cpp's cost depends on the shapes only); the persona rows use the
given LoRA and say how much of it they keep: the delta's energy (lower rank) or its projection (merged), and the
correlation of their next-token logit shift with the full LoRA's.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _table import write_section

from personactl import chat_prompt, load_model, load_trait
from personactl.blackbox import LlamaCppBackend, load_lora_folder, write_gguf_lora, write_merged_gguf
from personactl.lora import energy_line, lower_rank
from personactl.lora.direction import LoRADirection, LoRAFactors, singular_values
from personactl.models import EMBEDDED_MODELS

NEW_TOKENS = 64
TARGET = 0.08
REFERENCE = "unadapted Q4_1"
TARGETS = {
    "attention (q,k,v,o)": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
    "MLP (gate,up,down)": ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
}
TARGETS["all 7"] = TARGETS["attention (q,k,v,o)"] + TARGETS["MLP (gate,up,down)"]


def random_lora(backbone, rank: int, modules: tuple[str, ...], seed: int = 0) -> LoRADirection:
    """A rank-`rank` LoRA with random factors on `modules` of every block (a small delta: the text stays sane)."""
    generator = torch.Generator().manual_seed(seed)
    factors = {}
    for layer in range(backbone.n_layers):
        for module in modules:
            name = f"model.layers.{layer}.{module}"
            out_f, in_f = backbone.model.get_submodule(name).weight.shape
            a = torch.randn(rank, in_f, generator=generator) / in_f**0.5
            factors[name] = LoRAFactors(a, torch.randn(out_f, rank, generator=generator) * 1e-3, 1.0)
    return LoRADirection(factors, {"peft_type": "LORA", "r": rank, "lora_alpha": float(rank)}, {"base_model_type": backbone.model_type})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lora", type=Path, default=Path("runs/lora-pirate/diff"), help="the persona LoRA (direction or adapter folder)")
    parser.add_argument("--ranks", default="4,8,16,32", help="ranks of the random grid")
    parser.add_argument("--lower", default="8,4", help="ranks of the persona LoRA's lower-rank exports")
    parser.add_argument("--merged", default="q8_0,f16,source", help="weight types of the merged exports")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="llama.cpp threads: 1 waits on no other thread (2 on a machine shared with other jobs stall at llama.cpp's barriers)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gguf-lora-cost-") as work:
        measure(args, Path(work))


def measure(args: argparse.Namespace, work: Path) -> None:
    """Write every mode's file into `work`, time the modes, write the table."""
    backbone = load_model("smollm2-135m")
    base = LlamaCppBackend("smollm2-135m", n_ctx=1024, n_threads=args.threads)
    prompts = [chat_prompt(q) for q in load_trait("pirate").eval_questions[: args.prompts]]
    persona = load_lora_folder(args.lora)
    # mode -> (backend, LoRA file or None, description columns)
    modes: dict[str, tuple[LlamaCppBackend, Path | None, dict]] = {REFERENCE: (base, None, _describe(0, "-"))}
    for rank in (int(r) for r in args.ranks.split(",")):
        for label, modules in TARGETS.items():
            path = write_gguf_lora(random_lora(backbone, rank, modules), work / f"r{rank}-{len(modules)}.gguf", backbone)
            modes[f"random LoRA, {label}, rank {rank}"] = (base, path, _describe(backbone.n_layers * len(modules), rank))
    adapted = len(persona.modules)
    modes[f"persona LoRA (rank {persona.rank})"] = (
        base,
        write_gguf_lora(persona, work / "persona.gguf", backbone),
        _describe(adapted, persona.rank, "all"),
    )
    for rank in (int(r) for r in args.lower.split(",")):
        low, energy = lower_rank(persona, rank)
        print(energy_line(rank, energy))
        path = write_gguf_lora(low, work / f"persona-r{rank}.gguf", backbone)
        modes[f"persona LoRA, lower rank {rank}"] = (base, path, _describe(adapted, rank, f"{100 * energy:.1f}% energy"))
    attention, energy = modules_only(persona, "self_attn.")
    path = write_gguf_lora(attention, work / "persona-attention.gguf", backbone)
    modes["persona LoRA, attention modules only"] = (base, path, _describe(len(attention.modules), persona.rank, f"{100 * energy:.1f}% energy"))
    source = EMBEDDED_MODELS["smollm2-135m"].locate()
    for weights in args.merged.split(","):
        merged = write_merged_gguf(persona, work / f"merged-{weights}.gguf", backbone, source, weights=weights)
        print(merged.summary())
        kind = merged.weights.split(" ")[0]
        load = functools.partial(LlamaCppBackend, n_ctx=1024, n_threads=args.threads)
        modes[f"persona merged, {kind} weights"] = (
            load(merged.path),
            None,
            _describe(f"{adapted} merged", "-", f"{100 * merged.delta_kept:.1f}% projection"),
        )
        if weights != "source":  # the same file at scale 0: what the weight type alone does to the speed
            plain = write_merged_gguf(persona, work / f"plain-{weights}.gguf", backbone, source, scale=0.0, weights=weights)
            modes[f"unadapted, the same weights as {kind} (merged at scale 0)"] = (load(plain.path), None, _describe(f"{adapted} re-encoded", "-"))

    fidelity = logit_fidelity(modes, prompts, f"persona LoRA (rank {persona.rank})")

    def run(name: str, new_tokens: int = NEW_TOKENS) -> float:
        backend, lora, _ = modes[name]
        with backend.steered(loras=[(lora, 1.0)] if lora else []):
            start = time.perf_counter()
            for prompt in prompts:
                backend.generate([prompt], max_new_tokens=new_tokens, forced=True)
            return time.perf_counter() - start

    names = [name for name in modes if name != REFERENCE]
    for name in modes:  # warm up: first calls allocate
        run(name, 8)
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(args.rounds):  # each mode paired with the unadapted model back to back, which first alternating
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            pair = (REFERENCE, name) if round_ % 2 == 0 else (name, REFERENCE)
            timed = {n: run(n) for n in pair}
            ratios[name].append(timed[name] / timed[REFERENCE])
            for n, t in timed.items():
                seconds[n].append(t)
    n_tokens = NEW_TOKENS * len(prompts)
    rows = []
    for name in modes:
        cost = float(np.median(ratios[name])) - 1 if name in ratios else 0.0
        rows.append(
            {
                "mode": name,
                **modes[name][2],
                "logit-shift corr vs persona LoRA": fidelity.get(name, "-"),
                "tokens/s": round(n_tokens / float(np.median(seconds[name])), 1),
                "cost": "-" if name == REFERENCE else f"{100 * cost:+.1f}%",
                "cost range": "-" if name == REFERENCE else f"{100 * (min(ratios[name]) - 1):+.1f}% .. {100 * (max(ratios[name]) - 1):+.1f}%",
                "<= 8%": "-" if name.startswith("unadapted") else ("yes" if cost <= TARGET else "no"),
            }
        )
    meeting = [r["mode"] + _caveat(float(fidelity[r["mode"]])) for r in rows if r["<= 8%"] == "yes" and r["mode"] in fidelity]
    note = (
        f"SmolLM2-135M-Instruct Q4_1 under llama.cpp (llama-cpp-python), batch 1, {len(prompts)} pirate questions x {NEW_TOKENS} forced "
        f"new tokens (prefill included), {args.rounds} rounds; in each, every mode timed back to back with the unadapted model "
        "(which first alternating by round, the modes' order rotated); cost = the median over the rounds of that paired time ratio, "
        "minus 1 (range: the rounds' lowest and highest); tokens/s: the median time. "
        f"{args.threads} llama.cpp thread(s) (2 threads stall at llama.cpp's barriers on this shared 2-core machine: 3-8 tokens/s "
        "instead of ~90). "
        f"Random LoRAs: random factors on the named projections of all {backbone.n_layers} blocks (the cost depends on the shapes only). "
        f"Persona: {args.lora} (rank {persona.rank}, {adapted} adapted weights); lower rank = `export gguf-lora --rank R` (energy = share "
        "of the delta's squared Frobenius norm kept); merged = `export gguf-merged --weights W` (the adapted weights written as W, "
        "every other tensor as in the Q4_1 source; projection = share of the delta the written weights carry). Logit-shift corr: "
        "next-token logits minus the unadapted model's, over the prompts, against the persona LoRA's. "
        f"Persona options that meet <= 8%: {'; '.join(meeting) if meeting else 'none'}."
    )
    print(
        write_section(
            "gguf_lora_cost",
            "GGUF LoRA cost against rank and targets; lower-rank and merged exports (SmolLM2-135M)",
            rows,
            note,
            data={"raw_seconds": seconds, "paired_ratios": ratios, "tokens": n_tokens, "threads": args.threads},
        )
    )
    for r in rows:
        print(r)
    print(note)


def _caveat(corr: float) -> str:
    """What a persona option that meets the target gives up, from its logit-shift correlation with the full LoRA."""
    if corr >= 0.95:
        return ""
    return f" (but {'the persona is lost' if corr < 0.5 else 'it keeps only part of the persona'}: logit-shift corr {corr:.4f})"


def _describe(adapted: int, rank, kept: str = "-") -> dict:
    return {"adapted weights": adapted, "rank": rank, "delta kept": kept}


def modules_only(direction: LoRADirection, part: str) -> tuple[LoRADirection, float]:
    """The LoRA on the modules whose path holds `part`, and their share of the delta's energy (squared Frobenius norm)."""
    energy = {name: float((values.double() ** 2).sum()) for name, values in singular_values(direction).items()}
    kept = {name: f for name, f in direction.modules.items() if part in name}
    return LoRADirection(kept, direction.config, direction.metadata), sum(energy[n] for n in kept) / sum(energy.values())


def logit_fidelity(modes: dict, prompts: list, persona: str) -> dict[str, str]:
    """Correlation of each persona mode's next-token logit shift (against the unadapted model) with the persona LoRA's."""
    backend0 = modes[REFERENCE][0]

    def logits(name: str) -> np.ndarray:
        backend, lora, _ = modes[name]
        with backend.steered(loras=[(lora, 1.0)] if lora else []):
            return np.concatenate([backend.next_token_logits(p).astype(np.float64) for p in prompts])

    base = np.concatenate([backend0.next_token_logits(p).astype(np.float64) for p in prompts])
    full = logits(persona) - base
    return {name: f"{np.corrcoef(logits(name) - base, full)[0, 1]:.4f}" for name in modes if name.startswith("persona")}


if __name__ == "__main__":
    main()
