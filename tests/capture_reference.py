"""The exact reference for a one-pass capture, shared by tests/test_capture.py and benchmarks/one_pass_capture.py:
greedy tokens from Hugging Face's own `generate`, and one full forward over each prompt + those tokens."""

from __future__ import annotations

import torch

from personactl import activations


def forward_over_tokens(backbone, prompts, new_tokens, eos, positions):
    """One full forward over each prompt + its answer tokens up to (not including) the first end token, averaged over
    the answer tokens that are not special."""
    prompt_ids = backbone.encode(prompts)
    special = set(backbone.tokenizer.all_special_ids)
    answers = []
    for row in new_tokens.tolist():
        ends = [k for k, t in enumerate(row) if t in eos]
        answers.append(row[: ends[0]] if ends else row)
    ids, mask = activations.left_pad([p + a for p, a in zip(prompt_ids, answers)], backbone.pad_id)
    width = ids.shape[1]
    prompt_mask = torch.zeros(ids.shape, dtype=torch.bool)
    response_mask = torch.zeros(ids.shape, dtype=torch.bool)
    for i, (p, a) in enumerate(zip(prompt_ids, answers)):
        prompt_mask[i, width - len(p) - len(a) : width - len(a)] = True
        response_mask[i, width - len(a) :] = torch.tensor([t not in special for t in a], dtype=torch.bool)  # the text has no special tokens
    batch = activations.Batch(ids, mask, prompt_mask, response_mask)
    return activations.reduce_positions(activations.hidden_states(backbone, ids, mask), batch, positions)


def greedy_tokens(backbone, prompts, max_new_tokens):
    """The new tokens of HF's greedy generate over one left-padded batch of formatted `prompts`."""
    batch = activations.make_batch(backbone, prompts)
    out = backbone.model.generate(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=backbone.pad_id
    )
    return out[:, batch.input_ids.shape[1] :]
