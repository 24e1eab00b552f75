"""llama.cpp as a generation backend: a GGUF model under llama-cpp-python, steered by control vectors and GGUF LoRAs.

`LlamaCppBackend` loads a .gguf file (an embedded model's alias or a path,
`llamacpp_files.resolve_gguf`) with llama-cpp-python, formats chats with the
GGUF's own chat template (the formatter `create_chat_completion` uses) and
generates greedily or from a per-row seed. It switches the steering of its
context per call: control vectors (`llamacpp_controls.Control`, through
`llama_set_adapter_cvec`; `positions="response"` prefills the prompt but its
last token unsteered and steers from there on, as `steering.steer` does) and
LoRA GGUFs at a scale (W + scale * dW; checked by `llamacpp_files` first).
Nothing imports llama_cpp at import time.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..generation import Prompt
from ..models import EMBEDDED_MODELS, Message
from .llamacpp_controls import Control, control_buffer
from .llamacpp_files import LlamaCppError, check_lora_gguf, lora_gguf, resolve_gguf

DEFAULT_CTX = 2048


def _llama_cpp() -> Any:
    try:
        import llama_cpp  # noqa: PLC0415
    except ImportError as exc:
        raise LlamaCppError("the llama.cpp backend needs llama-cpp-python: pip install 'personactl[llamacpp]' (or `make setup`)") from exc
    return llama_cpp


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


def context_size(max_new_tokens: int, prompt_budget: int = 1024) -> int:
    """n_ctx for a job of short prompts (up to `prompt_budget` tokens) and `max_new_tokens` answers."""
    return int(-(-(prompt_budget + max_new_tokens) // 256) * 256)


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
