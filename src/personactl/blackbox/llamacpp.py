"""llama.cpp as a generation backend: a GGUF model steered by control vectors and GGUF LoRAs.

`LlamaCppBackend` loads a .gguf file (an embedded model's alias or a path) with
llama-cpp-python, formats chats with the GGUF's own chat template (the
formatter `create_chat_completion` uses) and generates greedily or from a
per-row seed. Steering:

- a persona vector is a llama.cpp control vector (`llama_set_adapter_cvec`),
  added to the output of block il, so our layer l (= hidden_states[l], the
  output of block l-1) is block il = l-1, at offset (il-1)*n_embd of the flat
  buffer (llama.cpp keeps no slot for block 0: layer 1 cannot be steered).
  A control vector belongs to the context, so a coefficient sweep runs one
  pass per coefficient; `positions="response"` prefills the prompt but its last
  token unsteered and steers from there on, as `steering.steer` does.
- a LoRA direction or persona adapter is a llama.cpp LoRA GGUF at a scale
  (W + scale * dW); folders are converted once (`gguf_lora.write_gguf_lora`)
  and cached. Every path is checked before it reaches llama.cpp.

The sweep methods `llamacpp-vector`, `llamacpp-lora`, `llamacpp-adapter` and
`llamacpp-prompt` are the HF methods' twins on this backend (`backends.py`
maps `--backend llamacpp` onto them). Nothing imports llama_cpp at import time.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelLoadError, PersonactlError
from ..generation import Prompt
from ..methods import LayerSpec, MethodContext, MethodError, PromptMethod, per_coefficient
from ..models import EMBEDDED_MODELS, Backbone, Message
from ..vectors import PersonaVector

DEFAULT_CTX = 2048
GGUF_MAGIC = b"GGUF"


class LlamaCppError(PersonactlError):
    """A llama.cpp backend request that cannot run (model file, layer, LoRA file, context size)."""


def _llama_cpp() -> Any:
    try:
        import llama_cpp  # noqa: PLC0415
    except ImportError as exc:
        raise LlamaCppError("the llama.cpp backend needs llama-cpp-python: pip install 'personactl[llamacpp]' (or `make setup`)") from exc
    return llama_cpp


def resolve_gguf(spec: str | Path) -> Path:
    """The .gguf file of an embedded model's alias or a .gguf path; anything else is a clear error."""
    text = str(spec)
    if text in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[text].locate()
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        _check_magic(path, "model")
        return path
    raise ModelLoadError(
        f"the llama.cpp backend loads GGUF models only: '{text}' is neither an alias "
        f"({', '.join(EMBEDDED_MODELS)}) nor a .gguf file (use --backend hf for HF folders and hub ids)"
    )


def _check_magic(path: Path, what: str) -> None:
    with open(path, "rb") as fh:
        if fh.read(4) != GGUF_MAGIC:
            raise LlamaCppError(f"{path} is not a GGUF file (no GGUF header): give a llama.cpp {what} file")


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def gguf_header(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The key-value pairs (arrays skipped) and tensor names of a GGUF file, read from its header only
    (gguf.GGUFReader maps every tensor: seconds on a model file)."""
    import struct  # noqa: PLC0415

    with open(path, "rb") as fh:

        def read(fmt: str) -> Any:
            size = struct.calcsize(fmt)
            data = fh.read(size)
            if len(data) != size:
                raise LlamaCppError(f"{path} is a truncated GGUF file")
            return struct.unpack(fmt, data)[0]

        def string() -> str:
            return fh.read(read("<Q")).decode("utf-8", errors="replace")

        def value(kind: int) -> Any:
            if kind in _SCALARS:
                return read(_SCALARS[kind])
            if kind == 8:
                return string()
            if kind == 9:
                item, count = read("<I"), read("<Q")
                if item in _SCALARS:
                    fh.seek(count * struct.calcsize(_SCALARS[item]), 1)
                else:
                    for _ in range(count):
                        value(item)
                return None
            raise LlamaCppError(f"{path}: unknown GGUF value type {kind}")

        if fh.read(4) != GGUF_MAGIC:
            raise LlamaCppError(f"{path} is not a GGUF file (no GGUF header)")
        read("<I")
        n_tensors, n_kv = read("<Q"), read("<Q")
        fields = {}
        for _ in range(n_kv):
            key = string()
            fields[key] = value(read("<I"))
        names = []
        for _ in range(n_tensors):
            names.append(string())
            fh.seek(8 * read("<I") + 4 + 8, 1)  # dims, type, offset
    return fields, names


def check_lora_gguf(path: str | Path, architecture: str | None = None) -> Path:
    """Refuse anything but an existing llama.cpp LoRA GGUF (for `architecture`) before llama.cpp sees it:
    llama.cpp ends the process on some bad adapter files instead of returning an error."""
    path = Path(path).expanduser()
    if not path.exists():
        raise LlamaCppError(f"LoRA file not found: {path}")
    if not path.is_file():
        raise LlamaCppError(f"{path} is not a file: give a LoRA GGUF file, or a LoRA/adapter folder to convert")
    _check_magic(path, "LoRA")
    fields, names = gguf_header(path)
    if fields.get("general.type") != "adapter" or fields.get("adapter.type") != "lora":
        raise LlamaCppError(
            f"{path} is not a LoRA adapter GGUF (general.type={fields.get('general.type')!r}, "
            f"adapter.type={fields.get('adapter.type')!r})" + (" but a model file" if fields.get("general.type") == "model" else "")
        )
    arch = fields.get("general.architecture")
    if architecture and arch and arch != architecture:
        raise LlamaCppError(f"{path} is a LoRA for a '{arch}' model, this model is '{architecture}'")
    if not any(name.endswith(".lora_a") for name in names):
        raise LlamaCppError(f"{path} holds no lora_a/lora_b tensors")
    return path


def control_buffer(terms: Sequence[tuple[PersonaVector, Mapping[int, float], float]], n_layers: int, hidden: int) -> tuple[np.ndarray, int, int]:
    """The flat float32 buffer `llama_set_adapter_cvec` reads and its block range (il_start, il_end), inclusive.

    Each term is (vector, {our layer: weight}, coef) and adds coef * weight * v[l] at layer l;
    block il (1..n_layers-1) reads data[(il-1)*hidden : il*hidden], and block il is our layer il+1.
    """
    data = np.zeros((n_layers - 1, hidden), dtype=np.float32)
    blocks: list[int] = []
    for vector, weights, coef in terms:
        if vector.hidden_size != hidden or vector.n_layers != n_layers:
            raise LlamaCppError(
                f"vector '{vector.trait}' has {vector.n_layers} layers x {vector.hidden_size} but the GGUF model has "
                f"{n_layers} x {hidden}: it was made for another model"
            )
        for layer, weight in weights.items():
            if not 2 <= layer <= n_layers:
                raise LlamaCppError(
                    f"layer {layer} cannot be steered through llama.cpp: control vectors reach layers 2..{n_layers} "
                    "(layer l = output of block l-1; llama.cpp has no control slot for block 0)"
                )
            data[layer - 2] += float(coef) * float(weight) * vector.directions[layer].float().numpy()
            blocks.append(layer - 1)
    if not blocks:
        raise LlamaCppError("a control vector needs at least one layer")
    return np.ascontiguousarray(data.reshape(-1)), min(blocks), max(blocks)


@dataclass
class Control:
    """A control vector request: `vector` at `layers` ({layer: weight} or one layer), times `coef`."""

    vector: PersonaVector
    layers: int | Mapping[int, float]
    coef: float
    positions: str = "all"

    def weights(self) -> dict[int, float]:
        return {int(self.layers): 1.0} if isinstance(self.layers, int) else {int(k): float(v) for k, v in self.layers.items()}


class LlamaCppBackend:
    """A GGUF model under llama-cpp-python, with control vectors and LoRA adapters switched per call."""

    def __init__(self, spec: str | Path = "smollm2-135m", *, n_ctx: int | None = None, n_threads: int | None = None, seed: int = 0) -> None:
        llama_cpp = _llama_cpp()
        import torch  # noqa: PLC0415

        self.path = resolve_gguf(spec)
        self.name = str(spec) if str(spec) in EMBEDDED_MODELS else self.path.stem
        threads = n_threads or max(1, torch.get_num_threads())

        def load(size: int) -> Any:
            return llama_cpp.Llama(
                model_path=str(self.path), n_ctx=size, n_threads=threads, n_threads_batch=threads, seed=seed, verbose=False, logits_all=False
            )

        self.llm = load(n_ctx or DEFAULT_CTX)
        train = self.llm._model.n_ctx_train()  # noqa: SLF001
        if 0 < train < self.llm.n_ctx():  # never past what the model was trained on
            self.llm.close()
            self.llm = load(train)
        self._ctx = self.llm._ctx.ctx  # noqa: SLF001 - llama-cpp-python has no control-vector/LoRA-switch API on Llama
        self._model = self.llm._model.model  # noqa: SLF001
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_layers = int(llama_cpp.llama_model_n_layer(self._model))
        self.hidden_size = int(self.llm.n_embd())
        self.architecture = str(self.llm.metadata.get("general.architecture", ""))
        self._loras: dict[str, Any] = {}
        self._cvec: np.ndarray | None = None  # the applied control buffer (None: no control vector)
        self._cvec_range = (-1, -1)
        self._formatter = self._chat_formatter()

    # -- prompts ---------------------------------------------------------------------------------------------

    def _chat_formatter(self) -> Any:
        from llama_cpp import llama_chat_format  # noqa: PLC0415

        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            return None
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        text = self.llm._model.token_get_text  # noqa: SLF001
        return llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=text(eos) if eos != -1 else "", bos_token=text(bos) if bos != -1 else ""
        )

    def chat(self, messages: Sequence[Message]) -> str:
        """A conversation formatted by the GGUF's chat template (a plain transcript when it has none)."""
        if self._formatter is None:
            from ..models import plain_chat  # noqa: PLC0415

            return plain_chat(messages)
        try:
            return self._formatter(messages=list(messages)).prompt
        except Exception:  # noqa: BLE001 - templates that refuse a system role, as Backbone.chat
            if not any(m["role"] == "system" for m in messages):
                raise
            from ..models import _fold_system  # noqa: PLC0415

            return self._formatter(messages=_fold_system(messages)).prompt

    def tokens(self, prompt: Prompt) -> list[int]:
        """Token ids of a message list (chat-formatted) or an already formatted string."""
        text = prompt if isinstance(prompt, str) else self.chat(prompt)
        add_bos = self._formatter is None  # the template writes its own special tokens
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    # -- steering state --------------------------------------------------------------------------------------

    def set_control(self, *controls: Control) -> None:
        """Apply control vectors (summed); none clears them. The KV cache is dropped: it was computed without them."""
        llama_cpp = _llama_cpp()
        self.llm.reset()
        if not controls:
            if self._cvec is not None:
                llama_cpp.llama_set_adapter_cvec(self._ctx, None, 0, self.hidden_size, -1, -1)
                self._cvec = None
            return
        data, start, end = control_buffer([(c.vector, c.weights(), c.coef) for c in controls], self.n_layers, self.hidden_size)
        if self._cvec is not None and self._cvec_range == (start, end) and np.array_equal(self._cvec, data):
            return  # already applied: setting it again would make llama.cpp re-reserve its graph
        pointer = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        if llama_cpp.llama_set_adapter_cvec(self._ctx, pointer, data.size, self.hidden_size, start, end):
            raise LlamaCppError("llama.cpp refused the control vector")
        self._cvec, self._cvec_range = data, (start, end)

    def load_lora(self, path: str | Path) -> Any:
        """Load a LoRA GGUF once (checked first); returns llama.cpp's handle."""
        key = str(Path(path).expanduser().resolve())
        if key not in self._loras:
            checked = check_lora_gguf(path, self.architecture)
            handle = _llama_cpp().llama_adapter_lora_init(self._model, str(checked).encode("utf-8"))
            if not handle:
                raise LlamaCppError(f"llama.cpp could not load the LoRA {checked} (made for another model?)")
            self._loras[key] = handle
        return self._loras[key]

    def set_lora(self, *adapters: tuple[str | Path, float]) -> None:
        """Use these (LoRA GGUF, scale) pairs from now on; none removes every LoRA. Drops the KV cache."""
        llama_cpp = _llama_cpp()
        handles = [self.load_lora(path) for path, _ in adapters]
        self.llm.reset()
        if not adapters:
            status = llama_cpp.llama_set_adapters_lora(self._ctx, None, 0, None)
        else:
            array = (llama_cpp.llama_adapter_lora_p_ctypes * len(handles))(*handles)
            scales = (ctypes.c_float * len(adapters))(*[float(s) for _, s in adapters])
            status = llama_cpp.llama_set_adapters_lora(self._ctx, array, len(handles), scales)
        if status:
            raise LlamaCppError("llama.cpp refused the LoRA adapters")

    @contextmanager
    def steered(self, *controls: Control, loras: Sequence[tuple[str | Path, float]] = ()) -> Iterator[LlamaCppBackend]:
        """Control vectors (at every position) and LoRAs for the body of the `with`, cleared afterwards (exceptions included)."""
        try:
            if loras:
                self.set_lora(*loras)
            if controls:
                self.set_control(*controls)
            yield self
        finally:
            if controls:
                self.set_control()
            if loras:
                self.set_lora()

    # -- generation ------------------------------------------------------------------------------------------

    def _check_fits(self, n_prompt: int, max_new_tokens: int) -> None:
        if n_prompt + max_new_tokens > self.llm.n_ctx():
            raise LlamaCppError(
                f"a prompt of {n_prompt} tokens plus {max_new_tokens} new tokens exceeds the context of {self.llm.n_ctx()}: "
                "shorten the prompt (or /reset the chat), lower max_new_tokens, or load with a larger n_ctx"
            )

    def _prefill(self, tokens: list[int], controls: Sequence[Control]) -> None:
        """Start a sequence under `controls` (none given: whatever `set_control`/`steered` set); with `response`/`prompt`
        controls, evaluate all but the last token with the prompt's steering."""
        self.llm.reset()
        if not controls:
            return
        positions = {c.positions for c in controls}
        if len(positions) > 1:
            raise LlamaCppError("the llama.cpp backend steers one set of positions per call: give every term the same positions")
        mode = positions.pop() if positions else "all"
        if mode not in ("all", "response", "prompt"):
            raise LlamaCppError(f"unknown positions '{mode}': use all, response or prompt")
        if mode == "all" or len(tokens) < 2:
            if mode != "prompt":
                self.set_control(*controls)
            return
        self.set_control(*(controls if mode == "prompt" else ()))
        self.llm.eval(tokens[:-1])
        state = self.llm.n_tokens
        self.set_control(*(controls if mode == "response" else ()))
        self.llm.n_tokens = state  # set_control resets the cache position; the prefix stays valid for these positions

    def generate(
        self,
        prompts: Sequence[Prompt],
        *,
        controls: Sequence[Control] = (),
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        seed: int = 0,
        seeds: Sequence[int] | None = None,
        forced: bool = False,
    ) -> list[str]:
        """Answers to `prompts`, one sequence at a time; row i samples from `seeds[i]` (default seed + i).

        `forced` ignores end-of-generation tokens (a fixed length, for timing). `controls` are applied for
        this call and cleared afterwards; without them, the control vectors and LoRAs set by `steered` apply.
        """
        llama_cpp = _llama_cpp()
        seeds = list(seeds) if seeds is not None else [seed + i for i in range(len(prompts))]
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        answers = []
        try:
            for prompt, row_seed in zip(prompts, seeds):
                tokens = self.tokens(prompt)
                self._check_fits(len(tokens), max_new_tokens)
                self._prefill(tokens, controls)
                self.llm.set_seed(int(row_seed) & 0x7FFFFFFF)
                out: list[int] = []
                if max_new_tokens > 0:
                    for token in self.llm.generate(
                        tokens, temp=float(temperature), top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0, repeat_penalty=1.0, reset=True
                    ):
                        if not forced and llama_cpp.llama_vocab_is_eog(self._vocab, token):
                            break
                        out.append(token)
                        if len(out) >= max_new_tokens:
                            break
                answers.append(self.llm.detokenize(out).decode("utf-8", errors="replace").strip())
        finally:
            if controls:
                self.set_control()
        return answers

    def next_token_logits(self, prompt: Prompt, controls: Sequence[Control] = ()) -> np.ndarray:
        """Logits of the token after `prompt` (float32, [n_vocab]), under `controls`."""
        llama_cpp = _llama_cpp()
        tokens = self.tokens(prompt)
        self._check_fits(len(tokens), 1)
        try:
            self._prefill(tokens, controls)
            self.llm.eval(tokens[self.llm.n_tokens :])
            pointer = llama_cpp.llama_get_logits_ith(self._ctx, -1)
            return np.ctypeslib.as_array(pointer, shape=(self.llm.n_vocab(),)).astype(np.float32).copy()
        finally:
            if controls:
                self.set_control()

    def close(self) -> None:
        self._loras.clear()  # llama.cpp frees adapters with their model
        self.llm.close()


# -- LoRA sources ----------------------------------------------------------------------------------------------


def lora_gguf(source: str | Path, backend: LlamaCppBackend, backbone: Backbone | None = None) -> Path:
    """A LoRA GGUF for `source`: a .gguf file as it is, or a LoRA direction / persona adapter (folder or registry
    name) converted once by `gguf_lora.write_gguf_lora` and cached by content. The conversion needs the HF
    model (tensor names, heads): `backbone`, else it is loaded from the backend's GGUF."""
    text = str(source)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf":
        return check_lora_gguf(path, backend.architecture)
    from ..lora.adapters import resolve_adapter  # noqa: PLC0415

    folder = Path(resolve_adapter(text))
    try:
        from . import gguf_lora  # noqa: PLC0415
    except ImportError as exc:
        raise LlamaCppError(
            f"converting the LoRA folder {folder} to GGUF needs personactl.blackbox.gguf_lora, which this install lacks: "
            "give a LoRA .gguf file instead"
        ) from exc
    if not folder.is_dir():
        raise LlamaCppError(f"LoRA not found: {source} is neither a LoRA .gguf file nor an adapter folder or registry name")
    target = _lora_cache(folder, backend)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        if backbone is None:
            from ..models import load_model  # noqa: PLC0415

            backbone = load_model(str(backend.path))
        gguf_lora.write_gguf_lora(folder, target, backbone)
    return check_lora_gguf(target, backend.architecture)


def _lora_cache(folder: Path, backend: LlamaCppBackend) -> Path:
    from ..model_folder import cache_root  # noqa: PLC0415

    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        file = folder / name
        if file.is_file():
            digest.update(name.encode() + file.read_bytes())
    digest.update(backend.architecture.encode())
    root = cache_root()
    if root is None:
        import tempfile  # noqa: PLC0415

        root = Path(tempfile.gettempdir()) / "personactl-models"
    return root / "gguf-lora" / f"{folder.name}-{digest.hexdigest()[:16]}.gguf"


# -- sweep methods -------------------------------------------------------------------------------------------


def context_size(max_new_tokens: int, prompt_budget: int = 1024) -> int:
    """n_ctx for a job of short prompts (up to `prompt_budget` tokens) and `max_new_tokens` answers."""
    return int(-(-(prompt_budget + max_new_tokens) // 256) * 256)


@functools.lru_cache(maxsize=2)
def shared_backend(spec: str, n_ctx: int, seed: int = 0) -> LlamaCppBackend:
    """One backend per (model, context size), shared by the llama.cpp methods of a sweep."""
    return LlamaCppBackend(spec, n_ctx=n_ctx, seed=seed)


# Free the shared models while Python is still whole: llama.cpp's own destructor fails during interpreter teardown.
atexit.register(shared_backend.cache_clear)


def _backend_for(ctx: MethodContext) -> LlamaCppBackend:
    spec = ctx.options.get("model") or ctx.backbone.name
    backend = shared_backend(str(spec), context_size(ctx.settings.max_new_tokens), ctx.settings.seed)
    if backend.hidden_size != ctx.backbone.hidden_size or backend.n_layers != ctx.backbone.n_layers:
        raise LlamaCppError(
            f"the GGUF model {backend.path} ({backend.n_layers} x {backend.hidden_size}) is not the sweep's model "
            f"{ctx.backbone.name} ({ctx.backbone.n_layers} x {ctx.backbone.hidden_size})"
        )
    return backend


@dataclass
class LlamaCppVectorMethod:
    """Method `vector` on llama.cpp: the persona vector as a control vector at the layer (or blend), one pass per coefficient."""

    ctx: MethodContext
    name: str = "llamacpp-vector"
    uses_layers: bool = True
    backend: LlamaCppBackend = field(init=False)

    def __post_init__(self) -> None:
        if self.ctx.vector is None:
            raise MethodError(f"method '{self.name}' needs a persona vector: pass --vector or let the sweep extract one")
        self.backend = _backend_for(self.ctx)

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: LayerSpec, seeds: Sequence[int]) -> list[str]:
        from ..generation import chat_prompt  # noqa: PLC0415

        if isinstance(layer, str):
            if layer not in self.ctx.blends:
                raise MethodError(f"no weights for the layer blend '{layer}': resolve it with experiment.choose_layers first")
            layers: int | dict[int, float] = dict(self.ctx.blends[layer])
        else:
            layers = int(layer)
        s = self.ctx.settings

        def answer_rows(coef: float, rows: list[int]) -> list[str]:
            controls = [Control(self.ctx.vector, layers, coef, self.ctx.positions)] if coef != 0 else []  # type: ignore[arg-type]
            return self.backend.generate(
                [chat_prompt(questions[i]) for i in rows],
                controls=controls,
                max_new_tokens=s.max_new_tokens,
                temperature=s.temperature,
                seeds=[seeds[i] for i in rows],
            )

        return per_coefficient(coefs, answer_rows)


@dataclass
class LlamaCppLoRAMethod:
    """Method `lora` on llama.cpp: the LoRA direction as a GGUF LoRA at scale coef (W + coef * dW), one pass per coefficient."""

    ctx: MethodContext
    name: str = "llamacpp-lora"
    uses_layers: bool = False
    option: str = "lora"
    backend: LlamaCppBackend = field(init=False)

    def __post_init__(self) -> None:
        source = self.ctx.options.get(self.option)
        if not source:
            raise MethodError(f"method '{self.name}' needs --{self.option} (a LoRA .gguf file, a folder or, for adapters, a registry name)")
        self.backend = _backend_for(self.ctx)
        self.path = lora_gguf(source, self.backend, self.ctx.backbone)
        self.backend.load_lora(self.path)

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: LayerSpec, seeds: Sequence[int]) -> list[str]:
        from ..generation import chat_prompt  # noqa: PLC0415

        s = self.ctx.settings

        def answer_rows(coef: float, rows: list[int]) -> list[str]:
            with self.backend.steered(loras=[(self.path, coef)] if coef != 0 else []):
                return self.backend.generate(
                    [chat_prompt(questions[i]) for i in rows],
                    max_new_tokens=s.max_new_tokens,
                    temperature=s.temperature,
                    seeds=[seeds[i] for i in rows],
                )

        return per_coefficient(coefs, answer_rows)


@dataclass
class LlamaCppAdapterMethod(LlamaCppLoRAMethod):
    """Method `adapter` on llama.cpp: a persona adapter at strength coef (1 = as trained, 0 = off)."""

    name: str = "llamacpp-adapter"
    option: str = "adapter"


@dataclass
class LlamaCppPromptMethod:
    """Method `prompt` on llama.cpp: the system-prompt baseline (same instructions as `prompt`)."""

    ctx: MethodContext
    name: str = "llamacpp-prompt"
    uses_layers: bool = False
    backend: LlamaCppBackend = field(init=False)

    def __post_init__(self) -> None:
        self.backend = _backend_for(self.ctx)

    def generate(self, questions: Sequence[str], coefs: Sequence[float], layer: LayerSpec, seeds: Sequence[int]) -> list[str]:
        from ..generation import chat_prompt  # noqa: PLC0415
        from ..traits import Trait  # noqa: PLC0415

        trait = self.ctx.trait
        if not isinstance(trait, Trait):
            raise MethodError(f"method '{self.name}' needs a trait with instructions, not plain contrastive texts")
        s = self.ctx.settings
        prompts = [chat_prompt(q, PromptMethod._system(trait, c)) for q, c in zip(questions, coefs)]  # noqa: SLF001
        return self.backend.generate(prompts, max_new_tokens=s.max_new_tokens, temperature=s.temperature, seeds=seeds)


def describe(backend: LlamaCppBackend) -> dict[str, Any]:
    """What a run records about the backend."""
    return {
        "backend": "llamacpp",
        "gguf": str(backend.path),
        "n_ctx": backend.llm.n_ctx(),
        "layers": backend.n_layers,
        "hidden": backend.hidden_size,
        "architecture": backend.architecture,
    }


__all__ = [
    "Control",
    "LlamaCppBackend",
    "LlamaCppError",
    "check_lora_gguf",
    "control_buffer",
    "lora_gguf",
    "resolve_gguf",
]


# -- command-line jobs ---------------------------------------------------------------------------------------


def generate_answers(
    backend: LlamaCppBackend,
    prompts: Sequence[Prompt],
    *,
    control: Control | None = None,
    lora: str | Path | None = None,
    lora_scale: float = 1.0,
    baseline: bool = False,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
) -> tuple[list[str], list[str] | None]:
    """`personactl generate --backend llamacpp`: answers under the control vector and/or LoRA, and unsteered with `baseline`."""
    loras = [(lora_gguf(lora, backend), lora_scale)] if lora else []
    kwargs = dict(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    with backend.steered(loras=loras):
        steered = backend.generate(prompts, controls=[control] if control else [], **kwargs)  # type: ignore[arg-type]
    base = backend.generate(prompts, **kwargs) if baseline else None  # type: ignore[arg-type]
    return steered, base


CHAT_HELP = "commands: /persona LORA.gguf|FOLDER|NAME [SCALE] | off, /vector PATH COEF [LAYER] | off, /reset, /help"


class LlamaCppChat:
    """A terminal chat on llama.cpp (`personactl chat --backend llamacpp`): a persona LoRA and a control vector."""

    def __init__(self, backend: LlamaCppBackend, max_new_tokens: int = 96) -> None:
        self.backend = backend
        self.max_new_tokens = max_new_tokens
        self.history: list[Message] = []
        self.controls: list[Control] = []

    def handle(self, line: str) -> str:
        """One line: a command or a message; a mistake the user can fix is answered with `error: ...`."""
        line = line.strip()
        if not line:
            return ""
        try:
            if not line.startswith("/"):
                return self._reply(line)
            command, _, rest = line.partition(" ")
            if command == "/persona":
                return self._persona(rest.strip())
            if command == "/vector":
                return self._vector(rest.strip())
            if command == "/reset":
                self.history = []
                return "conversation cleared"
            if command == "/help":
                return CHAT_HELP
            if command == "/blend":
                return "error: /blend needs the hf backend (llama.cpp: /persona with one LoRA GGUF and a scale)"
            return f"unknown command {command}; {CHAT_HELP}"
        except PersonactlError as exc:
            return f"error: {exc}"

    def _reply(self, message: str) -> str:
        messages = [*self.history, {"role": "user", "content": message}]
        answer = self.backend.generate([messages], controls=self.controls, max_new_tokens=self.max_new_tokens)[0]
        self.history = [*messages, {"role": "assistant", "content": answer}]
        return answer

    def _persona(self, spec: str) -> str:
        parts = spec.split()
        if not parts or parts[0] in ("off", "none"):
            self.backend.set_lora()
            return "persona off"
        try:
            scale = float(parts[1]) if len(parts) > 1 else 1.0
        except ValueError:
            return f"error: '{parts[1]}' is not a scale (a number): /persona NAME [SCALE]"
        path = lora_gguf(parts[0], self.backend)
        self.backend.set_lora((path, scale))
        return f"persona {Path(parts[0]).name} (LoRA scale {scale:g})"

    def _vector(self, spec: str) -> str:
        from ..lora.chat import default_layer  # noqa: PLC0415
        from ..vectors import load_vector  # noqa: PLC0415

        parts = spec.split()
        if not parts or parts[0] in ("off", "none"):
            self.controls = []
            return "vector off"
        if len(parts) not in (2, 3):
            return "error: use /vector PATH COEF [LAYER]"
        try:
            coef = float(parts[1])
            layer = (
                int(parts[2]) if len(parts) == 3 else default_layer(Path(parts[0]), self.backend.n_layers, lowest=2)
            )  # llama.cpp cannot steer layer 1
        except ValueError:
            return f"error: '{' '.join(parts[1:])}' is not COEF [LAYER] (a number and a whole number)"
        vector = load_vector(parts[0])
        control = Control(vector, layer, coef)
        control_buffer([(vector, control.weights(), coef)], self.backend.n_layers, self.backend.hidden_size)  # checks now
        self.controls = [control]
        return f"vector {Path(parts[0]).name} at layer {layer}, coef {coef:g}"

    def close(self) -> None:
        self.backend.close()
