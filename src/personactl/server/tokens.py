"""A token's raw bytes, as OpenAI's logprob `bytes` report them: a token that holds part of a multi-byte UTF-8
character gives its own partial bytes (decoded alone it would only be U+FFFD)."""

from __future__ import annotations

import json
import re

from transformers import PreTrainedTokenizerBase
from transformers.convert_slow_tokenizer import bytes_to_unicode

BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _decoder_types(decoder: dict | None) -> set[str]:
    if not decoder:
        return set()
    return {decoder["type"], *(t for inner in decoder.get("decoders") or [] for t in _decoder_types(inner))}


class TokenBytes:
    """Maps token ids to their bytes, the way the tokenizer itself turns pieces into text.

    Byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM2): the piece's characters map back through GPT-2's
    bytes<->unicode table. SentencePiece with byte fallback (Llama 2, Gemma): a `<0xNN>` piece is the byte NN.
    Added and special tokens, and every other tokenizer: the UTF-8 of the token decoded alone.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        spec = json.loads(backend.to_str()) if backend is not None else {}
        self.byte_level = "ByteLevel" in _decoder_types(spec.get("decoder"))
        self.byte_fallback = bool((spec.get("model") or {}).get("byte_fallback"))
        self.to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
        self.added = set(tokenizer.added_tokens_decoder)

    def __call__(self, token_id: int) -> bytes:
        if token_id not in self.added:
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            if self.byte_level and piece and all(c in self.to_byte for c in piece):
                return bytes(self.to_byte[c] for c in piece)
            # transformers types one id's token, and one sequence's text below, as str | list[str]
            if self.byte_fallback and (match := BYTE_PIECE.fullmatch(piece or "")):  # type: ignore[arg-type]
                return bytes([int(match[1], 16)])
        return self.tokenizer.decode([token_id]).encode("utf-8")  # type: ignore[union-attr]
