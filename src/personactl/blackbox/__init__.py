"""Black-box steering: personas for models whose internals personactl does not run.

`cvec` writes and reads llama.cpp control vectors (GGUF), `gguf_lora` writes
LoRA persona directions and adapters as llama.cpp LoRA GGUF files. Nothing
here imports llama_cpp at import time; it is an optional extra.
"""
