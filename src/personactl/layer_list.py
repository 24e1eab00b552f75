"""The one syntax of a list of layers on the command line: '9,10,11', '9 10 11', '18-28', '18,20,24-26'.

Every option that takes several layers (`generate --layer`, `chat --layer`, `sweep --layers`, `monitor
--layer`, `export vector --layers`, ...) reads it here, so a list written for one command works in all of them.
Some options also take words (`auto`, `auto:K`, `all`): the caller names those it accepts.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from .errors import LayerError

_NUMBER = re.compile(r"^\d+$")
_RANGE = re.compile(r"^(\d+)-(\d+)$")


def parse_layers(text: str | Sequence[str], *, words: Collection[str] = (), option: str = "--layers") -> list[int | str]:
    """Layer numbers (ranges expanded, repeats dropped, in the order given) and the accepted `words`, kept as text.

    `text` is one string or the values of a repeated option. A word ending in ':' accepts any suffix
    ('auto:' takes auto:3). Anything else is a one-line LayerError naming `option`.
    """
    parts = [p for item in ([text] if isinstance(text, str) else text) for p in item.replace(",", " ").split()]
    chosen: list[int | str] = []
    for part in parts:
        lowered = part.lower()
        if _NUMBER.match(part):
            found: list[int | str] = [int(part)]
        elif match := _RANGE.match(part):
            low, high = int(match.group(1)), int(match.group(2))
            if low > high:
                raise LayerError(f"{option} {part}: a range goes up, e.g. {high}-{low}")
            found = list(range(low, high + 1))
        elif lowered in words or any(w.endswith(":") and lowered.startswith(w) for w in words):
            found = [lowered]
        else:
            accepted = ", ".join(f"'{w}K'" if w.endswith(":") else f"'{w}'" for w in words)
            raise LayerError(
                f"{option} '{part}' is not a layer: give numbers and ranges such as 9,10,11 or 18-28 or 18,20,24-26"
                + (f", or {accepted}" if accepted else "")
            )
        chosen.extend(x for x in found if x not in chosen)
    if not chosen:
        raise LayerError(f"{option} is empty: give numbers and ranges such as 9,10,11 or 18-28")
    return chosen


def layer_numbers(text: str | Sequence[str], option: str = "--layers") -> list[int]:
    """Numbers and ranges only (no words): '9,10,11' or '18-28' -> the layers."""
    return [int(x) for x in parse_layers(text, option=option)]
