"""Shared fixtures: tiny random models built from configs (no download) and the embedded model."""

from __future__ import annotations

import os

# No test touches the network. huggingface_hub reads this once, when it is first imported, so it is set before
# any import that could bring it in.
os.environ["HF_HUB_OFFLINE"] = "1"

import shutil  # noqa: E402
import string  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("PERSONACTL_PROGRESS", "0")
if "PERSONACTL_MODEL_CACHE" not in os.environ:  # this file may be imported twice (pytest, then `from conftest import`)
    os.environ["PERSONACTL_MODEL_CACHE"] = tempfile.mkdtemp(prefix="personactl-models-")
MODEL_CACHE = os.environ["PERSONACTL_MODEL_CACHE"]


@pytest.fixture(scope="session", autouse=True)
def _model_cache_removed_after_the_session():
    """Converted models go to a per-session folder, never the user's cache, and are deleted afterwards."""
    yield
    if os.path.basename(MODEL_CACHE).startswith("personactl-models-"):
        shutil.rmtree(MODEL_CACHE, ignore_errors=True)


TINY_ARCHS = ("llama", "qwen2", "gemma3", "gpt2")
SIMPLE_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"


def char_tokenizer(chat_template: str | None = SIMPLE_TEMPLATE):
    """A character-level fast tokenizer: every printable character is a token."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<system>", "<user>", "<assistant>"]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(string.printable)))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=specials[4:],
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_model(arch: str):
    """A 3-block random causal LM of the given architecture with a 48-d residual stream."""
    import transformers as tf

    torch.manual_seed(0)
    vocab = 128
    common = dict(
        vocab_size=vocab,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if arch == "llama":
        model = tf.LlamaForCausalLM(tf.LlamaConfig(**common))
    elif arch == "qwen2":
        model = tf.Qwen2ForCausalLM(tf.Qwen2Config(**common))
    elif arch == "gemma3":
        model = tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(**common, head_dim=12, sliding_window=8))
    elif arch == "gpt2":
        model = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=vocab, n_embd=48, n_layer=3, n_head=4, bos_token_id=1, eos_token_id=2, pad_token_id=0))
    else:
        raise ValueError(arch)
    return model.eval()


def random_vectors(folder, names=("rand",), hidden: int = 48, layers: int = 4):
    """Seeded random persona vectors NAME.safetensors in `folder` (for the server tests on the tiny models)."""
    from personactl import PersonaVector

    torch.manual_seed(1)
    for name in names:
        PersonaVector(torch.randn(layers, hidden) * 4, trait=name).save(folder / f"{name}.safetensors")
    return folder


def tiny_backbone(arch: str):
    from personactl import from_model

    template = None if arch == "gpt2" else SIMPLE_TEMPLATE  # gpt2 exercises the plain fallback
    return from_model(tiny_model(arch), char_tokenizer(template), name=f"tiny-{arch}")


@pytest.fixture(params=TINY_ARCHS)
def tiny(request):
    """A tiny random Backbone, once per architecture."""
    return tiny_backbone(request.param)


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M-Instruct, loaded once per test session."""
    from personactl import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def pirate(smollm2):
    """(trait, vector, pairs) of the pirate trait on SmolLM2 from 6 questions, extracted once per session."""
    from personactl import ExtractionSettings, extract, load_trait

    trait = load_trait("pirate")
    vector, pairs = extract(smollm2, trait, ExtractionSettings(n_questions=6, max_new_tokens=32, batch_size=30))
    return trait, vector, pairs


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny llama saved as a model folder, for commands that load by path."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def vector_file(tmp_path):
    """A random persona vector file for the tiny models (3 blocks, 48-d)."""
    from personactl import PersonaVector

    torch.manual_seed(0)
    return PersonaVector(torch.randn(4, 48), trait="random").save(tmp_path / "v.safetensors")


# `make interop` (part of `make test`) installs repeng and steering-vectors here with --no-deps.
INTEROP = os.environ.get("PERSONACTL_INTEROP", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv", "interop"))


@pytest.fixture(scope="session")
def interop():
    """The real repeng and steering-vectors (their `repeng` and `steering_vectors` modules), imported from INTEROP.

    repeng 0.4.0 names `np.float_` in an annotation evaluated when it is imported, and numpy 2 removed that
    alias: it exists (as np.float64) only while repeng is imported. Missing libraries fail the tests, they do
    not skip them."""
    import numpy as np

    if INTEROP not in sys.path:
        sys.path.insert(0, INTEROP)
    added = not hasattr(np, "float_")
    if added:
        np.float_ = np.float64
    try:
        import repeng
        import steering_vectors
    except ImportError as exc:
        pytest.fail(f"{exc}: run `make interop` (or pip install --no-deps --target {INTEROP} steering-vectors==0.12.2 repeng==0.4.0)")
    finally:
        if added:
            del np.float_
    return SimpleNamespace(repeng=repeng, steering_vectors=steering_vectors)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """llama_cpp.server serving the embedded SmolLM2 GGUF on a free 127.0.0.1 port (its /v1 base URL); stopped however the tests end."""
    from personactl.blackbox.llamacpp_server import llamacpp_server
    from personactl.models import EMBEDDED_MODELS

    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with llamacpp_server(EMBEDDED_MODELS["smollm2-135m"].locate(), log) as url:
        yield url
