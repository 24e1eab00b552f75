"""Row surgery on a KV cache, so requests can join and leave a running batch between decode steps.

Rows are left-padded to one length: a row that joins a longer batch gets zero
keys/values on its left (masked out by the attention mask), and columns that are
padding in every row are dropped when the rows that needed them have left.
Only full-attention layers (`DynamicLayer`) are handled: the engine creates its
caches without a model config, so sliding-window models keep every position too
(their masks still apply the window).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


def new_cache() -> DynamicCache:
    """An empty cache whose layers keep every position (no sliding-window truncation), so rows can be re-aligned."""
    return DynamicCache()


def _layers(cache: DynamicCache) -> list[DynamicLayer]:
    layers = []
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:
            raise TypeError(f"cannot re-align a {type(layer).__name__} cache layer: create the cache with new_cache()")
        layers.append(layer)
    return layers


def _kv(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's keys and values, which it holds from its first forward pass on."""
    if layer.keys is None or layer.values is None:
        raise TypeError("cannot re-align a cache layer that holds nothing yet: run a forward pass first")
    return layer.keys, layer.values


def pad_left(cache: DynamicCache, mask: torch.Tensor, columns: int) -> torch.Tensor:
    """Add `columns` empty positions on the left of every row; returns the attention mask padded alike."""
    if columns <= 0:
        return mask
    for layer in _layers(cache):
        keys, values = _kv(layer)
        shape = (*keys.shape[:-2], columns, keys.shape[-1])
        layer.keys = torch.cat([keys.new_zeros(shape), keys], dim=-2)
        layer.values = torch.cat([values.new_zeros(shape[:-1] + values.shape[-1:]), values], dim=-2)
    return torch.cat([mask.new_zeros(mask.shape[0], columns), mask], dim=1)


def join(cache: DynamicCache, mask: torch.Tensor, other: DynamicCache, other_mask: torch.Tensor) -> torch.Tensor:
    """Append `other`'s rows to `cache` (in place), left-padding whichever is shorter; returns the joined mask."""
    width = max(mask.shape[1], other_mask.shape[1])
    mask = pad_left(cache, mask, width - mask.shape[1])
    other_mask = pad_left(other, other_mask, width - other_mask.shape[1])
    for layer, extra in zip(_layers(cache), _layers(other)):
        (keys, values), (extra_keys, extra_values) = _kv(layer), _kv(extra)
        layer.keys = torch.cat([keys, extra_keys], dim=0)
        layer.values = torch.cat([values, extra_values], dim=0)
    return torch.cat([mask, other_mask], dim=0)


def keep_rows(cache: DynamicCache, mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Keep only `rows` (in place) and drop the left columns that are now padding in all of them; returns the mask."""
    index = torch.tensor(rows, dtype=torch.long, device=mask.device)
    mask = mask[index]
    used = mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else mask.shape[1]
    for layer in _layers(cache):
        keys, values = _kv(layer)
        layer.keys = keys[index.to(keys.device), :, start:]
        layer.values = values[index.to(values.device), :, start:]
    return mask[:, start:]
