"""Parameter modulation: a persona vector and a coefficient turned into sampling parameters for a closed model.

Without activation access the only knobs are the sampler's. The mapping (the
reference design's, made comparable across models):

- magnitude: m_l = |v_l| / (MAGNITUDE_UNIT * mean ||h_l||), the vector's norm at
  layer l counted in tenths of the mean hidden-state norm at that layer. Raw
  |v_l| grows with depth and width (SmolLM2's pirate vector: 7 at layer 5, 68 at
  layer 25, 112 at layer 28), so it says nothing across layers or models; the
  ratio does (0.11, 0.17, 0.20 there: steering vectors that work are typically
  10-20% of the residual norm at coef 1, i.e. m of 1-2).
- temperature = clamp(base + m * coef * TEMPERATURE_SCALE, *TEMPERATURE_RANGE):
  a positive coefficient samples more freely, a negative one more greedily.
- polarity: coef > 0 narrows the nucleus and penalises repetition (POSITIVE:
  top_p 0.9, repetition_penalty 1.1: fewer tail tokens, away from the default
  phrasing it would repeat); coef <= 0 leaves the default distribution
  (top_p 1.0, no penalty) and acts through the temperature alone.

This changes how random the answers are, not which way they lean: no sampling
parameter knows the persona's direction. The side-by-side experiment measures
how much (or how little) of the trait that buys.

The mean hidden-state norm: extraction records it over all the vector's
answers (`vector.extra["hidden_norms"]`); for an older vector, `hidden_norms`
runs one short forward pass of the local model over (up to N_NORM_PAIRS of)
its extraction answers, reduced exactly as the vector was (`vector.positions`,
e.g. response_avg), so numerator and denominator are the same kind of
quantity, and keeps the result in the vector's metadata. The
stored projections are not used: they are the components along v only, far
smaller than ||h||. A vector that already carries `hidden_norms` needs no local
model at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..backends import parse_backend
from ..errors import PersonactlError
from ..extraction import ContrastivePair, mean_hidden_norms, pair_activations, usable_pairs
from ..generation import chat_prompt
from ..methods import LayerSpec, MethodContext, MethodError
from ..models import Backbone
from ..vectors import PersonaVector
from .api import ApiGenerator, Sampling

MAGNITUDE_UNIT = 0.1  # |v_l| in tenths of mean ||h_l||
TEMPERATURE_SCALE = 0.1  # the reference design's factor
TEMPERATURE_RANGE = (0.0, 1.5)
POSITIVE = (0.9, 1.1)  # (top_p, repetition_penalty) for coef > 0
NEUTRAL = (1.0, 1.0)  # for coef <= 0
N_NORM_PAIRS = 8


class ModulationError(PersonactlError):
    """Parameter modulation that cannot be computed (no hidden-state norms, no layer)."""


def hidden_norms(backbone: Backbone, vector: PersonaVector, pairs: Sequence[ContrastivePair], n_pairs: int = N_NORM_PAIRS) -> list[float]:
    """Mean ||h_l|| per layer (0..n_layers) over the extraction answers, reduced as the vector was; cached in the vector."""
    stored = vector.extra.get("hidden_norms")
    if stored:
        return [float(x) for x in stored]
    positions = vector.positions if vector.positions != "unknown" else "response_avg"
    usable = usable_pairs(list(pairs), positions)[:n_pairs]
    if not usable:
        raise ModulationError(
            "parameter modulation needs the mean hidden-state norm of the vector's model: give a vector with its "
            ".pairs.jsonl beside it (or one whose metadata has hidden_norms)"
        )
    vector.extra["hidden_norms"] = mean_hidden_norms(*pair_activations(backbone, usable, positions=positions))
    return vector.extra["hidden_norms"]


def magnitude(vector: PersonaVector, layer: int, norms: Sequence[float]) -> float:
    """m_l = |v_l| / (MAGNITUDE_UNIT * mean ||h_l||)."""
    if not 1 <= layer < len(norms) or norms[layer] <= 0:
        raise ModulationError(f"no hidden-state norm for layer {layer}: use a layer in 1..{len(norms) - 1}")
    return float(vector[layer].norm()) / (MAGNITUDE_UNIT * norms[layer])


def modulated(base_temperature: float, mag: float, coef: float, max_tokens: int = 48) -> Sampling:
    """The sampling parameters for one coefficient (see the module docstring)."""
    lo, hi = TEMPERATURE_RANGE
    temperature = min(hi, max(lo, base_temperature + mag * coef * TEMPERATURE_SCALE))
    top_p, penalty = POSITIVE if coef > 0 else NEUTRAL
    return Sampling(round(temperature, 4), top_p, penalty, max_tokens)


def layer_magnitude(ctx: MethodContext, layer: LayerSpec) -> float:
    """The magnitude at one layer, or the weighted mean over a blend's layers."""
    if ctx.vector is None:
        raise MethodError("method 'modulation' needs a persona vector: pass --vector or let the sweep extract one")
    norms = hidden_norms(ctx.backbone, ctx.vector, ctx.pairs)
    if isinstance(layer, str):
        if layer not in ctx.blends:
            raise MethodError(f"no weights for the layer blend '{layer}': resolve it with experiment.choose_layers first")
        return sum(w * magnitude(ctx.vector, l, norms) for l, w in ctx.blends[layer].items())
    return magnitude(ctx.vector, layer, norms)


def api_generator(ctx: MethodContext, method: str) -> ApiGenerator:
    """The client for `ctx.options["backend"]`, which must be 'openai:MODEL' for an API method."""
    spec = ctx.options.get("backend") or "hf"
    kind, model = parse_backend(spec)
    if kind != "openai":
        raise MethodError(f"method '{method}' generates through an OpenAI-compatible API: add --backend openai:MODEL (got {spec!r})")
    return ApiGenerator(model)


@dataclass
class ModulationMethod:
    """The persona as sampling parameters through an OpenAI-compatible API (`--backend openai:MODEL`)."""

    ctx: MethodContext
    name: str = "modulation"
    uses_layers: bool = True

    def samplings(self, coefs: Sequence[float], layer: LayerSpec) -> list[Sampling]:
        mag = layer_magnitude(self.ctx, layer)
        s = self.ctx.settings
        return [modulated(s.temperature, mag, c, s.max_new_tokens) for c in coefs]

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: LayerSpec, seeds: Sequence[int]) -> list[str]:
        client = api_generator(self.ctx, self.name)  # the backend is checked before any forward pass
        return client.chat([chat_prompt(q) for q in questions], self.samplings(coefs, layer), seeds)


@dataclass
class ApiPromptMethod:
    """The system-prompt persona (as `prompt`: coef > 0 positive instruction, < 0 negative, 0 none) through the API."""

    ctx: MethodContext
    name: str = "api-prompt"
    uses_layers: bool = False

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: LayerSpec, seeds: Sequence[int]) -> list[str]:
        from ..methods import PromptMethod  # noqa: PLC0415
        from ..traits import Trait  # noqa: PLC0415

        if not isinstance(self.ctx.trait, Trait):
            raise MethodError("method 'api-prompt' needs a trait with instructions, not plain contrastive texts")
        client = api_generator(self.ctx, self.name)
        s = self.ctx.settings
        conversations = [chat_prompt(q, PromptMethod.instruction(self.ctx.trait, c)) for q, c in zip(questions, coefs)]
        return client.chat(conversations, Sampling(s.temperature, max_tokens=s.max_new_tokens), seeds)


@dataclass
class ModulatedAnswers:
    """What `generate_modulated` did: the answers and the parameters behind them."""

    answers: list[str]
    sampling: Sampling
    magnitude: float
    hidden_norm: float


def generate_modulated(
    backend: str,
    prompts: Sequence[str],
    vector_path: str,
    layer: int,
    coef: float,
    *,
    load_local: Callable[[], Backbone],
    base_temperature: float = 0.7,
    max_tokens: int = 64,
    seed: int = 0,
    system: str | None = None,
) -> ModulatedAnswers:
    """Answers from `backend` ('openai:MODEL') with the parameters that (vector, layer, coef) map to.

    The vector's hidden-state norms come from its metadata when stored; otherwise
    `load_local()` (the local twin of the served model) and the `.pairs.jsonl`
    beside the vector measure them.
    """
    from pathlib import Path  # noqa: PLC0415

    from ..extraction import load_pairs  # noqa: PLC0415
    from ..vectors import load_vector  # noqa: PLC0415

    kind, model = parse_backend(backend)
    if kind != "openai":
        raise ModulationError(f"parameter modulation generates through an API: use --backend openai:MODEL, not {backend!r}")
    vector = load_vector(vector_path)
    norms = vector.extra.get("hidden_norms")
    if not norms:
        pairs_file = Path(vector_path).with_suffix(".pairs.jsonl")
        if not pairs_file.exists():
            raise ModulationError(
                f"{vector_path} stores no hidden-state norms and has no {pairs_file.name} beside it: parameter modulation "
                "needs one of them to size the vector (see personactl.blackbox.modulation)"
            )
        backbone = load_local()
        vector.check_compatible(backbone)
        norms = hidden_norms(backbone, vector, load_pairs(pairs_file))
    mag = magnitude(vector, layer, norms)
    sampling = modulated(base_temperature, mag, coef, max_tokens)
    answers = ApiGenerator(model).chat([chat_prompt(p, system) for p in prompts], sampling, [seed + i for i in range(len(prompts))])
    return ModulatedAnswers(answers, sampling, mag, float(norms[layer]))
