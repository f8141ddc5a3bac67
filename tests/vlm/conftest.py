"""VLM test fixtures: tiny language models (a 2-layer Llama, a BPE tokenizer trained here: nothing downloaded); the
one_thread fixture comes from tests/conftest.py."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
CORPUS = ["a photo of a cat on a mat", "what is in the image?", "the dog runs in the park", "describe it"]


def _tiny_lm(folder: Path, chat_template: str | None) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tokenizer.chat_template = chat_template
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory) -> Path:
    """A random 2-layer Llama (hidden 64, untied head) with its own tokenizer and a chat template."""
    return _tiny_lm(tmp_path_factory.mktemp("tiny_lm"), CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def tiny_lm_without_template_dir(tmp_path_factory) -> Path:
    """The same kind of LM, with no chat template."""
    return _tiny_lm(tmp_path_factory.mktemp("tiny_lm_plain"), None)


def import_lmms_eval(module: str) -> ModuleType:
    """lmms-eval's ``module``; skips only where lmms-eval is not installed at all, so a broken install (a missing
    run-time dependency) fails instead of skipping."""
    if importlib.util.find_spec("lmms_eval") is None:
        pytest.skip("lmms-eval is not installed (pip install 'eupe[lmms-eval]' && pip install --no-deps "
                    "lmms-eval==0.7.3)")
    return importlib.import_module(module)
