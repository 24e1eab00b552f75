"""A terminal chat on llama.cpp (`personactl chat --backend llamacpp`): a persona LoRA and a control vector, switched by commands."""

from __future__ import annotations

from pathlib import Path

from ..errors import PersonactlError
from ..models import Message
from .llamacpp import LlamaCppBackend
from .llamacpp_controls import Control, control_buffer
from .llamacpp_files import lora_gguf

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
            if command == "/cap":
                return "error: /cap needs the hf backend (llama.cpp's C API only adds control vectors: it cannot clamp a projection)"
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
