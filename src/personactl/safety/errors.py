"""Errors of the safety-neuron pipeline (all user-fixable, exit code 2 in the CLI)."""

from __future__ import annotations

from ..errors import PersonactlError


class SafetyError(PersonactlError):
    """Bad safety data, masks, sparsity or a step that cannot run."""


class FrozenWeightsChanged(SafetyError):
    """A fine-tune that was to keep masked weights bit-identical changed some of them."""
