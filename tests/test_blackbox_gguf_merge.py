"""A LoRA persona folded into SmolLM2's GGUF: llama.cpp loads the file and answers as the base model with the LoRA at scale 1.

The merged file is the source GGUF with the adapted weights replaced by
W + dW in the type asked for; everything else is copied byte for byte.
Re-quantizing to the source's Q4_1 snaps a small delta back onto the 4-bit
grid the base weights already sit on: the kept share says so.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from test_blackbox_gguf_lora import LAYER, PROMPTS, _direction

from personactl.blackbox import GGUFLoRAError, LlamaCppBackend, write_gguf_lora, write_merged_gguf
from personactl.cli import run
from personactl.models import EMBEDDED_MODELS

SOURCE = EMBEDDED_MODELS["smollm2-135m"].locate()
MERGED = {f"blk.{LAYER}.attn_q.weight", f"blk.{LAYER}.attn_v.weight"}


def _answers_and_logits(backend: LlamaCppBackend, loras=()) -> tuple[list[str], np.ndarray]:
    prompts = [[{"role": "user", "content": p}] for p in PROMPTS]
    with backend.steered(loras=loras):
        answers = backend.generate(prompts, max_new_tokens=8)
        logits = np.concatenate([backend.next_token_logits(p).astype(np.float64) for p in prompts])
    return answers, logits


@pytest.fixture(scope="module")
def unmerged(smollm2, tmp_path_factory):
    """(base answers and logits, LoRA-at-scale-1 answers and logits) of the embedded GGUF under llama.cpp."""
    lora = write_gguf_lora(_direction(smollm2), tmp_path_factory.mktemp("lora") / "x.gguf", smollm2)
    backend = LlamaCppBackend("smollm2-135m", n_ctx=256, n_threads=1)
    try:
        return _answers_and_logits(backend), _answers_and_logits(backend, [(lora, 1.0)])
    finally:
        backend.close()


@pytest.mark.parametrize("weights", ["f32", "q8_0"])
def test_the_merged_gguf_answers_as_the_base_with_the_lora_at_scale_one(tmp_path, smollm2, unmerged, weights):
    (_, base), (lora_answers, lora) = unmerged
    merged = write_merged_gguf(_direction(smollm2), tmp_path / "m.gguf", smollm2, SOURCE, weights=weights)
    backend = LlamaCppBackend(merged.path, n_ctx=256, n_threads=1)
    try:
        answers, logits = _answers_and_logits(backend)
    finally:
        backend.close()
    corr = np.corrcoef(logits - base, lora - base)[0, 1]
    ratio = np.linalg.norm(logits - base) / np.linalg.norm(lora - base)
    print({"weights": weights, "shift corr": corr, "shift ratio": ratio, "answers": answers})
    assert corr > 0.99 and 0.95 < ratio < 1.05  # measured 0.9997 (f32 and q8_0)
    assert (logits.reshape(len(PROMPTS), -1).argmax(1) == lora.reshape(len(PROMPTS), -1).argmax(1)).all()
    if weights == "f32":  # q8_0's rounding flips a near-tie of this random delta after five words
        assert answers == lora_answers
    assert merged.merged == 2 and merged.delta_kept == pytest.approx(1.0, abs=1e-3)


def test_only_the_adapted_weights_change_and_the_file_says_how(tmp_path, smollm2):
    merged = write_merged_gguf(_direction(smollm2), tmp_path / "m.gguf", smollm2, SOURCE, weights="f16")
    source, written = gguf.GGUFReader(str(SOURCE)), gguf.GGUFReader(str(merged.path))
    assert [t.name for t in written.tensors] == [t.name for t in source.tensors]
    for before, after in zip(source.tensors, written.tensors):
        if before.name in MERGED:
            assert after.tensor_type == gguf.GGMLQuantizationType.F16 and list(after.shape) == list(before.shape)
        else:
            assert after.tensor_type == before.tensor_type and np.array_equal(np.asarray(after.data), np.asarray(before.data))
    fields = {k: f.contents() for k, f in written.fields.items() if not k.startswith("GGUF.")}
    original = {k: f.contents() for k, f in source.fields.items() if not k.startswith("GGUF.")}
    record = fields.pop("personactl.merged")
    assert fields == original
    assert '"scale": 1.0' in record and "F16 (the other weights as in the source)" in record and merged.weights in record


def test_re_quantizing_to_q4_1_loses_a_small_delta_and_says_so(tmp_path, smollm2):
    """A delta far below the 4-bit step (B x 0.01) snaps back onto the grid the Q4_1 weights sit on; Q8_0 keeps it."""
    small = _direction(smollm2, b_scale=0.01)
    lost = write_merged_gguf(small, tmp_path / "q4.gguf", smollm2, SOURCE, weights="source")
    kept = write_merged_gguf(small, tmp_path / "q8.gguf", smollm2, SOURCE, weights="q8_0")
    exact = write_merged_gguf(small, tmp_path / "f32.gguf", smollm2, SOURCE, weights="f32")
    large = write_merged_gguf(_direction(smollm2), tmp_path / "q4-large.gguf", smollm2, SOURCE, weights="source")
    print({"q4 small": lost.delta_kept, "q8 small": kept.delta_kept, "q4 large": large.delta_kept})
    assert lost.weights == "Q4_1 (re-quantized, as the source)"
    assert lost.delta_kept < 0.5 and "lost most of the persona" in lost.summary()  # measured 0.07
    assert kept.delta_kept == pytest.approx(1.0, abs=0.05) and "lost" not in kept.summary()
    assert exact.delta_kept == pytest.approx(1.0, abs=1e-4) and exact.delta_error < 1e-4  # f32 rounding only
    assert large.delta_kept > 0.9  # measured 1.00: a delta of the size of the weights survives Q4_1


def test_export_gguf_merged_command_writes_the_file(tmp_path, smollm2, capsys):
    _direction(smollm2).save(tmp_path / "run" / "diff")
    assert run(["export", "gguf-merged", str(tmp_path / "run"), "--out", str(tmp_path / "m.gguf"), "--scale", "0.5"]) == 0
    said = capsys.readouterr().out
    assert "2 weights merged" in said and "Q8_0" in said and "scale 0.5" in said
    assert '"scale": 0.5' in gguf.GGUFReader(str(tmp_path / "m.gguf")).fields["personactl.merged"].contents()


def test_bad_merges_are_refused_in_one_line(tmp_path, smollm2, model_dir, capsys):
    from conftest import tiny_backbone

    _direction(smollm2).save(tmp_path / "adapter")
    _direction(tiny_backbone("llama"), layer=1).save(tmp_path / "tiny")
    out = str(tmp_path / "m.gguf")
    cases = [
        (["export", "gguf-merged", str(tmp_path / "adapter"), "--out", out, "--weights", "q3"], "--weights 'q3' is not one of"),
        (["export", "gguf-merged", str(tmp_path / "adapter"), "--out", out, "--model", str(model_dir)], "is no GGUF model"),
        (["export", "gguf-merged", str(tmp_path / "tiny"), "--out", out], "is 48x48 but smollm2-135m has 576x576"),
    ]
    for argv, message in cases:
        assert run(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert not (tmp_path / "m.gguf").exists()
    lora = write_gguf_lora(_direction(smollm2), tmp_path / "lora.gguf", smollm2)
    with pytest.raises(GGUFLoRAError, match="is not a 'llama' model GGUF"):
        write_merged_gguf(_direction(smollm2), out, smollm2, lora)
