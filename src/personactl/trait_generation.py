"""Write a new trait file from a one-line description by asking an LLM.

As in the persona_vectors repository's data-generation step, one request asks
for five positive/negative system-instruction pairs, forty questions that do
not call up the trait by themselves, and a 0-100 judge rubric, as one JSON
object. The model is `openai:MODEL` (any OpenAI-compatible endpoint; base URL
and key from the judge's environment variables, the judge's client and retry
policy) or `local:MODEL` (a model loaded with `load_model`, chat-formatted).

The answer's JSON is found wherever it sits (a code fence, text around it) and
validated with the `Trait` model. A reply that cannot be used is answered in
the same conversation with what was wrong, up to `max_attempts` requests in
all; then a TraitGenerationError says what went wrong, and nothing is written.

Questions are deduplicated (exact after normalising whitespace and case, then
near-duplicates by embedding cosine, `judges.embedding.embed`), shuffled with a
seed, and split into extraction and held-out questions that never overlap.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

from pydantic import Field, TypeAdapter, ValidationError

from ._io import write_text_atomic
from .errors import OutputError, TraitError
from .models import Message
from .traits import MIN_EVAL_QUESTIONS, MIN_PAIRS, MIN_QUESTIONS, Trait

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

FORMATS = ("personactl", "persona_vectors")
N_PAIRS = MIN_PAIRS
N_QUESTIONS = 40
NEAR_DUPLICATE = 0.9  # cosine of MiniLM embeddings; rewordings of one question score ~0.95-1, distinct questions < 0.6
MAX_ATTEMPTS = 3
MAX_TOKENS = 4096  # five pairs, forty questions and a rubric take ~2,500 tokens
NEEDED = MIN_QUESTIONS + MIN_EVAL_QUESTIONS  # distinct questions a trait file needs


class TraitGenerationError(TraitError):
    """A trait that cannot be generated: bad options, no key, or answers that stay unusable."""


@dataclass(frozen=True)
class Reply:
    """One answer of the model; `cut` when it stopped at the token limit."""

    text: str
    cut: bool = False


Chat = Callable[[list[Message]], Reply]


@dataclass(frozen=True)
class DedupeCounts:
    """What became of the generated questions."""

    generated: int
    exact: int  # removed: the same text after normalising whitespace and case
    near: int  # removed: cosine >= the threshold with a question kept before
    kept: int

    def line(self) -> str:
        return f"{self.generated} questions generated, {self.exact} exact and {self.near} near duplicates removed, {self.kept} kept"


@dataclass
class GeneratedTrait:
    """A generated trait, how its questions were deduplicated, and where it was written (None: not written)."""

    trait: Trait
    counts: DedupeCounts
    attempts: int
    model: str
    fmt: str = "personactl"
    path: Path | None = None

    def text(self) -> str:
        """The trait file's text in `fmt`."""
        return trait_text(self.trait, self.fmt)


class _Unusable(Exception):
    """A reply that cannot be used; the message goes back to the model."""


class _Answer(Trait):
    """The model's reply: a Trait's pairs, rubric and (any number of) questions, before dedupe and split."""

    name: str = "trait"
    questions: list[str] = Field(min_length=1)
    eval_questions: list[str] = Field(default_factory=list)


_NAME = TypeAdapter(Annotated[str, Trait.model_fields["name"]])

PROMPT = string.Template("""\
I am building the data to find a character trait of a language model: the model answers the same questions under \
opposite system prompts, its activations are contrasted, and a judge model scores how strongly answers show the trait.

Trait name: $name
Trait description: $description

Reply with one JSON object and nothing else, with exactly these keys:

"instructions": a list of $n_pairs objects {"pos": "...", "neg": "..."}. "pos" is a system prompt that tells an \
assistant to show the trait strongly; "neg" is a system prompt for the same assistant that tells it to show the \
opposite behaviour. Word every pair differently, and let each stress another side of the trait.

"questions": a list of $n_questions questions or requests an ordinary user might send. Each one can be answered with \
or without the trait, so that only the system prompt decides whether the answer shows it: a question must not ask \
for the trait, name it, or take it for granted. Vary topics and kinds (advice, opinions, explanations, everyday \
tasks, short situations); no two questions may be alike.

"rubric": the prompt for the judge. It states the trait description above word for word, contains the placeholders \
{question} and {answer} once each, literally with their braces (for example "[QUESTION START]\\n{question}\\n\
[QUESTION END]" and "[ANSWER START]\\n{answer}\\n[ANSWER END]"), asks to judge only the trait and not correctness or \
helpfulness, explains what 0 (no sign of the trait) and 100 (the trait throughout) mean, and ends by asking for a \
number between 0 and 100 and nothing else.""")

FIX = string.Template(
    "That reply cannot be used: $problem. Reply again with the complete, corrected JSON object "
    "(keys instructions, questions, rubric) and nothing else."
)

MORE = string.Template("""\
After removing duplicates, $kept distinct questions remain and at least $needed are needed. Reply with one JSON \
object {"questions": [...]} and nothing else, holding $ask new questions that follow the same rules and differ from \
every question above.""")

FIX_MORE = string.Template(
    'That reply cannot be used: $problem. Reply again with one JSON object {"questions": [...]} holding the new questions, and nothing else.'
)


def generate_trait(
    name: str,
    description: str,
    model: str,
    *,
    out: str | Path | None = None,
    fmt: str = "personactl",
    force: bool = False,
    max_attempts: int = MAX_ATTEMPTS,
    near_duplicate: float = NEAR_DUPLICATE,
    n_questions: int = N_QUESTIONS,
    max_tokens: int = MAX_TOKENS,
    temperature: float = 0.7,
    seed: int = 0,
    timeout: float = 300,
) -> GeneratedTrait:
    """Ask `model` ('openai:MODEL' or 'local:MODEL') for a trait described in one line; write it to `out` if given.

    Every option and the output path are checked before the first request. Each
    request counts against `max_attempts`: the first asks for the whole trait;
    after a reply that is not usable JSON or fails validation, the next one
    sends the problem back in the same conversation. When fewer than
    MIN_QUESTIONS + MIN_EVAL_QUESTIONS (30) distinct questions remain after
    deduplication, the pairs and rubric are kept and the next request asks only
    for more questions, which are deduplicated against those kept. When the
    attempts run out, TraitGenerationError lists each attempt's problem and
    nothing is written.

    The distinct questions are shuffled with `seed` and split so the two sets
    never overlap: half are held out for evaluation (20 / 20 of 40; at least
    MIN_QUESTIONS stay for extraction), in either format.
    """
    _check_options(name, description, fmt, max_attempts, near_duplicate, n_questions, max_tokens)
    target = None if out is None else _check_output(Path(out), force)
    chat = _chat_for(model, max_tokens=max_tokens, temperature=temperature, seed=seed, timeout=timeout)
    trait, counts, attempts = _converse(
        chat, name, description, max_attempts=max_attempts, near_duplicate=near_duplicate, n_questions=n_questions, seed=seed
    )
    result = GeneratedTrait(trait, counts, attempts, model, fmt)
    if target is not None:
        result.path = write_text_atomic(target, result.text())
    return result


def trait_text(trait: Trait, fmt: str = "personactl") -> str:
    """A trait file's text: personactl's own JSON (as `traits show` prints it) or the persona_vectors repository's.

    The persona_vectors file holds the extraction questions in `questions` (what
    that repository's extraction reads, with `instruction` and `eval_prompt`) and
    adds `name`, `description` and the held-out `eval_questions`, which
    `traits.parse_trait` reads back as the same split."""
    if fmt == "personactl":
        return trait.model_dump_json(indent=2) + "\n"
    if fmt == "persona_vectors":
        data = {
            "name": trait.name,
            "description": trait.description,
            "instruction": [p.model_dump() for p in trait.instructions],
            "questions": trait.questions,
            "eval_questions": trait.eval_questions,
            "eval_prompt": trait.rubric,
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    raise TraitGenerationError(f"unknown trait format {fmt!r}: use one of {', '.join(FORMATS)}")


def extract_json(text: str) -> dict[str, Any]:
    """The JSON object in a model's answer: inside a code fence or with text around it (the first that parses).

    Raises ValueError saying why none was found."""
    candidates = [part.split("\n", 1)[1] if "\n" in part else part for part in text.split("```")[1::2]] + [text]
    decoder = json.JSONDecoder()
    first_error = None
    for candidate in candidates:
        start = candidate.find("{")
        while start != -1:
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError as exc:
                first_error = first_error or exc
            else:
                if isinstance(value, dict):
                    return value
            start = candidate.find("{", start + 1)
    if first_error is None:
        raise ValueError("the reply holds no JSON object (no '{' in it)" if text.strip() else "the reply is empty")
    raise ValueError(f"the reply's JSON does not parse: {first_error.msg} at line {first_error.lineno} column {first_error.colno}")


def dedupe_questions(questions: Sequence[str], threshold: float = NEAR_DUPLICATE) -> tuple[list[str], DedupeCounts]:
    """Questions without exact duplicates (whitespace and case normalised) and near duplicates (embedding cosine >=
    `threshold` with a question kept earlier), in their order; the first of each group is kept."""
    unique: dict[str, str] = {}
    for question in questions:
        unique.setdefault(" ".join(question.split()).casefold(), question.strip())
    distinct = list(unique.values())
    kept = _far_apart(distinct, threshold)
    counts = DedupeCounts(len(questions), len(questions) - len(distinct), len(distinct) - len(kept), len(kept))
    return kept, counts


def _far_apart(questions: list[str], threshold: float) -> list[str]:
    if len(questions) < 2:
        return questions
    from .judges.embedding import embed  # noqa: PLC0415 - loads sentence-transformers

    vectors = embed(questions)
    kept: list[int] = []
    for i in range(len(questions)):
        if not kept or float((vectors[kept] @ vectors[i]).max()) < threshold:
            kept.append(i)
    return [questions[i] for i in kept]


def _check_options(name: str, description: str, fmt: str, max_attempts: int, near_duplicate: float, n_questions: int, max_tokens: int) -> None:
    try:
        _NAME.validate_python(name)
    except ValidationError as exc:
        raise TraitGenerationError(f"trait name {name!r} is not usable: letters, digits, '_', '.' and '-' only") from exc
    if not description.strip():
        raise TraitGenerationError("the trait description is empty: say in one line what the trait is")
    if fmt not in FORMATS:
        raise TraitGenerationError(f"unknown trait format {fmt!r}: use one of {', '.join(FORMATS)}")
    if max_attempts < 1:
        raise TraitGenerationError(f"max attempts must be at least 1, got {max_attempts}")
    if not 0 < near_duplicate <= 1:
        raise TraitGenerationError(f"the near-duplicate threshold is a cosine in (0, 1], got {near_duplicate}")
    if n_questions < NEEDED:
        raise TraitGenerationError(
            f"ask for at least {NEEDED} questions ({MIN_QUESTIONS} extraction + {MIN_EVAL_QUESTIONS} held out), got {n_questions}"
        )
    if max_tokens < 1:
        raise TraitGenerationError(f"max tokens must be at least 1, got {max_tokens}")


def _check_output(path: Path, force: bool) -> Path:
    if path.is_dir():
        raise OutputError(f"refusing to write the trait to {path}: it is a folder; give a file path such as {path / 'trait.json'}")
    if path.exists() and not force:
        raise OutputError(f"refusing to overwrite {path}: pass --force (force=True) to replace it, or give another --out")
    return path


def _chat_for(spec: str, *, max_tokens: int, temperature: float, seed: int, timeout: float) -> Chat:
    """A blocking `messages -> Reply` function for 'openai:MODEL' or 'local:MODEL' (the judge's spec parser)."""
    from .judges.llm import JudgeError, parse_judge_spec  # noqa: PLC0415

    try:
        kind, model = parse_judge_spec(spec)
    except JudgeError:
        kind, model = "", ""
    if kind == "openai":
        return _openai_chat(model, max_tokens=max_tokens, temperature=temperature, seed=seed, timeout=timeout)
    if kind == "local":
        return _local_chat(model, max_tokens=max_tokens, temperature=temperature, seed=seed)
    raise TraitGenerationError(
        f"unknown model {spec!r} to write the trait: use 'openai:MODEL' (an OpenAI-compatible endpoint, base URL and key "
        "from PERSONACTL_JUDGE_BASE_URL / PERSONACTL_JUDGE_API_KEY or OPENAI_BASE_URL / OPENAI_API_KEY) or 'local:MODEL' "
        "(a local model: alias, Hugging Face folder, .gguf file or hub id)"
    )


def _openai_chat(model: str, *, max_tokens: int, temperature: float, seed: int, timeout: float) -> Chat:
    from .judges.llm import (  # noqa: PLC0415
        API_KEY_ENVS,
        BASE_URL_ENVS,
        DEFAULT_BASE_URL,
        _env,
        async_client,
        with_retries,
    )

    api_key = _env(API_KEY_ENVS)
    if not api_key:
        raise TraitGenerationError(
            f"no API key for the model {model!r}: set PERSONACTL_JUDGE_API_KEY (or OPENAI_API_KEY); "
            "a local server that needs no key accepts any non-empty value"
        )
    base_url = _env(BASE_URL_ENVS)
    label = f"model {model!r} at {base_url or DEFAULT_BASE_URL}"

    async def ask(messages: list[Message]) -> Reply:
        async with async_client(base_url, api_key, timeout) as client:
            completion = await with_retries(
                lambda: client.chat.completions.create(
                    model=model,
                    messages=cast("list[ChatCompletionMessageParam]", messages),  # role/content dicts, typed by role in the SDK
                    max_tokens=max_tokens,
                    temperature=temperature,
                    seed=seed,
                ),
                label,
                5,
                0.5,
                TraitGenerationError,
            )
        if not completion.choices:
            return Reply("")
        choice = completion.choices[0]
        return Reply(choice.message.content or "", choice.finish_reason == "length")

    def chat(messages: list[Message]) -> Reply:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(ask(messages))
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # called from inside an event loop
            return pool.submit(asyncio.run, ask(messages)).result()

    return chat


def _local_chat(model: str, *, max_tokens: int, temperature: float, seed: int) -> Chat:
    from .generation import generate  # noqa: PLC0415
    from .models import load_model  # noqa: PLC0415

    backbone = load_model(model)
    calls = itertools.count()

    def chat(messages: list[Message]) -> Reply:
        call = next(calls)
        text = generate(backbone, [messages], max_new_tokens=max_tokens, temperature=temperature, seed=seed + call)[0]
        return Reply(text)

    return chat


def _converse(
    chat: Chat, name: str, description: str, *, max_attempts: int, near_duplicate: float, n_questions: int, seed: int
) -> tuple[Trait, DedupeCounts, int]:
    """The conversation: ask, check, send back what was wrong or ask for more questions, until a trait validates."""
    prompt = PROMPT.substitute(name=name, description=description.strip(), n_pairs=N_PAIRS, n_questions=n_questions)
    messages: list[Message] = [{"role": "user", "content": prompt}]
    draft: _Answer | None = None  # pairs and rubric accepted, waiting for more questions
    asked: list[str] = []  # every question received for the current draft
    problems: list[str] = []
    for attempt in range(1, max_attempts + 1):
        reply = chat(messages)
        messages.append({"role": "assistant", "content": reply.text})
        try:
            data = _json_of(reply)
            if draft is None:
                draft = _validate_answer(data, name, description)
                asked = list(draft.questions)
            else:
                asked += _more_questions(data)
        except _Unusable as exc:
            problems.append(f"{attempt}: {exc}")
            fix = FIX if draft is None else FIX_MORE
            messages.append({"role": "user", "content": fix.substitute(problem=exc)})
            continue
        kept, counts = dedupe_questions(asked, near_duplicate)
        if len(kept) < NEEDED:
            problems.append(f"{attempt}: only {len(kept)} distinct questions after removing duplicates, {NEEDED} needed")
            ask = max(n_questions - len(kept), NEEDED - len(kept))
            messages.append({"role": "user", "content": MORE.substitute(kept=len(kept), needed=NEEDED, ask=ask)})
            continue
        try:
            return _split(draft, kept, seed), counts, attempt
        except (ValidationError, TraitError) as exc:  # not expected: pairs and rubric passed, questions are distinct
            raise TraitGenerationError(f"the generated trait does not validate: {_problem(exc)}") from exc
    raise TraitGenerationError(
        f"no usable trait after {max_attempts} request(s) ({'; '.join(problems)}): try a larger --max-attempts, "
        "a stronger model or a clearer --description"
    )


def _json_of(reply: Reply) -> dict[str, Any]:
    try:
        return extract_json(reply.text)
    except ValueError as exc:
        cut = " (the reply stopped at the token limit: raise --max-tokens)" if reply.cut else ""
        raise _Unusable(f"{exc}{cut}") from exc


def _validate_answer(data: dict[str, Any], name: str, description: str) -> _Answer:
    """The reply's pairs, questions and rubric checked with the Trait model's rules (persona_vectors keys accepted)."""
    fields = {
        "instructions": data.get("instructions", data.get("instruction")),
        "questions": data.get("questions"),
        "rubric": data.get("rubric", data.get("eval_prompt")),
    }
    missing = [key for key, value in fields.items() if value is None]
    if missing:
        raise _Unusable(f"the JSON object lacks the key(s) {', '.join(missing)}")
    try:
        answer = _Answer.model_validate(dict(fields, name=name, description=description.strip()))
    except ValidationError as exc:
        raise _Unusable(_problem(exc)) from exc
    if _squash(answer.description) not in _squash(answer.rubric):  # the judge must score what the user described
        answer.rubric = f"The trait: {answer.description}\n\n{answer.rubric}"
    answer.questions = [q.strip() for q in answer.questions]
    return answer


def _more_questions(data: dict[str, Any]) -> list[str]:
    questions = data.get("questions")
    if not isinstance(questions, list) or not questions or not all(isinstance(q, str) and q.strip() for q in questions):
        raise _Unusable('the JSON object needs "questions": a list of non-empty strings')
    return [q.strip() for q in questions]


def _split(draft: _Answer, questions: list[str], seed: int) -> Trait:
    """Shuffle with `seed` and split into extraction and held-out questions."""
    order = list(questions)
    random.Random(seed).shuffle(order)
    pairs = [pair.model_dump() for pair in draft.instructions]
    n_eval = min(len(order) // 2, len(order) - MIN_QUESTIONS)
    return Trait.model_validate(
        {
            "name": draft.name,
            "description": draft.description,
            "instructions": pairs,
            "questions": order[: len(order) - n_eval],
            "eval_questions": order[len(order) - n_eval :],
            "rubric": draft.rubric,
        }
    )


def _problem(exc: ValidationError | TraitError) -> str:
    """Every problem pydantic found (up to five), on one line, for the model and for the user."""
    if isinstance(exc, TraitError):
        return str(exc)
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "answer"
        parts.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def _squash(text: str) -> str:
    return " ".join(text.split()).casefold()
