"""A terminal chat where persona adapters and persona vectors combine.

Commands: `/persona NAME` (or `/persona off`), `/blend a=0.5,b=0.5`,
`/vector PATH COEF [LAYER]` (`/vector off`), `/cap PATH [RANGE] [LAYERS]`
(`/cap off`), `/reset` (forget the conversation), `/help`. Anything else is
a user message.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from ..capping import DEFAULT_CAP, cap_term, parse_cap_at
from ..errors import PersonactlError
from ..generation import generate
from ..layer_list import layer_numbers
from ..models import Backbone
from ..steering import SteeringTerm
from ..vectors import load_vector
from .adapters import PersonaSwitcher, parse_blend, resolve_adapter
from .direction import combine

VECTOR_USAGE = "/vector PATH COEF [LAYER], e.g. /vector vectors/pirate.safetensors 1.5 20"
CAP_USAGE = "/cap PATH [RANGE] [LAYERS], e.g. /cap vectors/pirate.safetensors neg-p90 18-22"
CHAT_HELP = "commands: /persona NAME|off, /blend a=0.5,b=0.5, /vector PATH COEF [LAYER]|off, /cap PATH [RANGE] [LAYERS]|off, /reset, /help"


class ChatSession:
    """One conversation; `handle(line)` returns what to print."""

    def __init__(self, backbone: Backbone, max_new_tokens: int = 96) -> None:
        self.backbone = backbone
        self.switcher = PersonaSwitcher(backbone)
        self.steering: list[SteeringTerm] = []
        self.caps: list[SteeringTerm] = []
        self.history: list[dict[str, str]] = []
        self.max_new_tokens = max_new_tokens
        self._blends = tempfile.TemporaryDirectory(prefix="personactl-blend-")

    def handle(self, line: str) -> str:
        """One line: a command or a message. A mistake the user can fix is answered with
        `error: ...` and the session goes on as before; anything else is a bug and raises."""
        line = line.strip()
        if not line:
            return ""
        try:
            if not line.startswith("/"):
                return self._reply(line)
            command, _, rest = line.partition(" ")
            handlers = {
                "/persona": self._persona,
                "/blend": self._blend,
                "/vector": self._vector,
                "/cap": self._cap,
                "/reset": lambda _: self._reset(),
                "/help": lambda _: CHAT_HELP,
            }
            if command not in handlers:
                return f"unknown command {command}; {CHAT_HELP}"
            return handlers[command](rest.strip())
        except PersonactlError as exc:
            return f"error: {exc}"
        except OSError as exc:
            return f"error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")

    def _reply(self, message: str) -> str:
        messages = [*self.history, {"role": "user", "content": message}]
        answer = generate(self.backbone, [messages], steering=[*self.steering, *self.caps], max_new_tokens=self.max_new_tokens)[0]
        self.history = [*messages, {"role": "assistant", "content": answer}]  # a failed reply leaves no half turn
        return answer

    def _persona(self, name: str) -> str:
        if name in ("", "off", "none"):
            self.switcher.use(None)
            return "persona off"
        if self.switcher.model is None or name not in self.switcher.model.peft_config:
            self.switcher.load(name, resolve_adapter(name))
        self.switcher.use(name)
        return f"persona {name}"

    def _blend(self, spec: str) -> str:
        terms = parse_blend(spec)
        name = "blend_" + re.sub(r"\W", "_", spec)  # peft adapter names may not contain dots
        folder = combine(terms, {"name": name}).save(Path(self._blends.name) / name)
        self.switcher.load(name, folder)
        self.switcher.use(name)
        return f"persona {name} (exact blend, rank {sum(d.rank for d, _ in terms)})"

    def _vector(self, spec: str) -> str:
        if spec in ("off", "none", ""):
            self.steering = []
            return "vector off"
        parts = spec.split()
        if len(parts) not in (2, 3):
            return f"error: use {VECTOR_USAGE}"
        path = Path(parts[0])
        try:
            coef = float(parts[1])
            layer = int(parts[2]) if len(parts) == 3 else None
        except ValueError:
            return f"error: '{' '.join(parts[1:])}' is not COEF [LAYER] (a number and a whole number): use {VECTOR_USAGE}"
        vector = load_vector(path, backbone=self.backbone)
        layer = self.backbone.check_layer(default_layer(path, self.backbone.n_layers) if layer is None else layer, allow_embedding=False)
        self.steering = [SteeringTerm(vector, layer, coef)]
        return f"vector {path.name} at layer {layer}, coef {coef:g}"

    def _cap(self, spec: str) -> str:
        """Keep a vector's projection in a range (`capping`): RANGE defaults to neg-p90, LAYERS to the vector's layer."""
        if spec in ("off", "none", ""):
            self.caps = []
            return "cap off"
        parts = spec.split()
        if len(parts) > 3:
            return f"error: use {CAP_USAGE}"
        path, at = Path(parts[0]), parts[1] if len(parts) > 1 else DEFAULT_CAP
        parse_cap_at(at)
        vector = load_vector(path, backbone=self.backbone)
        default = [default_layer(path, self.backbone.n_layers)]
        layers = [self.backbone.check_layer(l, allow_embedding=False) for l in (layer_numbers(parts[2], "LAYERS") if len(parts) == 3 else default)]
        self.caps = [cap_term(vector, layers, at)]
        return f"cap {path.name} at {at} on layers {', '.join(map(str, layers))}"

    def _reset(self) -> str:
        self.history = []
        return "conversation cleared"

    def close(self) -> None:
        self.switcher.close()
        self._blends.cleanup()


def default_layer(vector_path: Path, n_layers: int, lowest: int = 1) -> int:
    """The layer a run chose for this vector (layers.json beside it), else 2/3 of the depth (at least `lowest`)."""
    layers = vector_path.parent / "layers.json"
    if layers.exists():
        return int(json.loads(layers.read_text(encoding="utf-8"))["chosen"])
    return max(lowest, round(2 * n_layers / 3))
