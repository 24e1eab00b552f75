"""`.pt` files read without running a pickle: tensors, dicts, lists, numbers and strings only."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from .convention import PortableFormatError


def load_plain(path: str | Path, error: type[PortableFormatError], hint: str) -> Any:
    """`torch.load(path, weights_only=True)`; a missing file, a non-torch file or a pickle of objects is a
    one-line `error` (`hint` says what to save instead of an object)."""
    path = Path(path)
    if not path.is_file():
        raise error(f"file not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing; our error says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise error(f"refusing {path}: it holds pickled objects, not plain tensors ({hint})") from exc
        raise error(f"{path} is not a torch .pt file (torch cannot unpickle it)") from exc
    except (ValueError, OSError, RuntimeError, EOFError, IndexError, KeyError) as exc:
        raise error(f"{path} is not a torch .pt file ({str(exc).splitlines()[0][:120]})") from exc
