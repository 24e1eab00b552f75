"""A terminal chat where persona adapters and persona vectors combine.

Commands: `/persona NAME` (or `/persona off`), `/blend a=0.5,b=0.5`,
`/vector PATH COEF [LAYER]` (`/vector off`), `/reset` (forget the
conversation), `/help`. Anything else is a user message.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from ..errors import PersonactlError
from ..generation import generate
from ..models import Backbone
from ..steering import SteeringTerm
from ..vectors import load_vector
from .adapters import PersonaSwitcher, parse_blend, resolve_adapter
from .direction import combine

HELP = "commands: /persona NAME|off, /blend a=0.5,b=0.5, /vector PATH COEF [LAYER]|off, /reset, /help"


class ChatSession:
    """One conversation; `handle(line)` returns what to print."""

    def __init__(self, backbone: Backbone, max_new_tokens: int = 96) -> None:
        self.backbone = backbone
        self.switcher = PersonaSwitcher(backbone)
        self.steering: list[SteeringTerm] = []
        self.history: list[dict[str, str]] = []
        self.max_new_tokens = max_new_tokens
        self._blends = tempfile.TemporaryDirectory(prefix="personactl-blend-")

    def handle(self, line: str) -> str:
        line = line.strip()
        if not line:
            return ""
        if not line.startswith("/"):
            return self._reply(line)
        command, _, rest = line.partition(" ")
        handlers = {
            "/persona": self._persona, "/blend": self._blend, "/vector": self._vector,
            "/reset": lambda _: self._reset(), "/help": lambda _: HELP,
        }
        if command not in handlers:
            return f"unknown command {command}; {HELP}"
        try:
            return handlers[command](rest.strip())
        except PersonactlError as exc:
            return f"error: {exc}"

    def _reply(self, message: str) -> str:
        self.history.append({"role": "user", "content": message})
        answer = generate(self.backbone, [list(self.history)], steering=self.steering, max_new_tokens=self.max_new_tokens)[0]
        self.history.append({"role": "assistant", "content": answer})
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
            return "error: use /vector PATH COEF [LAYER]"
        path, coef = Path(parts[0]), float(parts[1])
        layer = int(parts[2]) if len(parts) == 3 else default_layer(path, self.backbone)
        self.steering = [SteeringTerm(load_vector(path, backbone=self.backbone), layer, coef)]
        return f"vector {path.name} at layer {layer}, coef {coef:g}"

    def _reset(self) -> str:
        self.history = []
        return "conversation cleared"

    def close(self) -> None:
        self.switcher.close()
        self._blends.cleanup()


def default_layer(vector_path: Path, backbone: Backbone) -> int:
    """The layer a run chose for this vector (layers.json beside it), else 2/3 of the depth."""
    layers = vector_path.parent / "layers.json"
    if layers.exists():
        return int(json.loads(layers.read_text(encoding="utf-8"))["chosen"])
    return max(1, round(2 * backbone.n_layers / 3))
