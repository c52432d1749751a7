"""Tiny random models and a byte-level tokenizer, built from configs in milliseconds.

For tests, docs and experiments that must not download anything.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

_SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>", "<eos>"]
TINY_VOCAB = 256 + len(_SPECIALS)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer (one token per UTF-8 byte) with ChatML specials and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {_BYTE_CHARS[b]: b for b in range(256)}
    for i, s in enumerate(_SPECIALS):
        vocab[s] = 256 + i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token=None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = (
        "{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}"
    )
    return fast


def _bytes_to_unicode() -> list[str]:
    # GPT-2's reversible byte -> printable-unicode map, the alphabet of ByteLevel.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


_BYTE_CHARS = _bytes_to_unicode()


def tiny_llama(
    *,
    d_model: int = 64,
    n_layers: int = 4,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    vocab: int = TINY_VOCAB,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> LlamaForCausalLM:
    """A random Llama (GQA, RoPE, tied embeddings) with the tiny tokenizer's vocabulary."""
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=256,
        eos_token_id=259,
        bos_token_id=None,
    )
    return LlamaForCausalLM(cfg).to(dtype=dtype).eval()  # type: ignore[call-arg]  # transformers types .to without self


def tiny_gpt2(
    *,
    d_model: int = 64,
    n_layers: int = 4,
    n_heads: int = 4,
    vocab: int = TINY_VOCAB,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> GPT2LMHeadModel:
    """A random GPT-2 (LayerNorm, learned positions) with the tiny tokenizer's vocabulary."""
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab,
        n_embd=d_model,
        n_layer=n_layers,
        n_head=n_heads,
        n_positions=256,
        pad_token_id=256,
        eos_token_id=259,
        bos_token_id=259,
    )
    return GPT2LMHeadModel(cfg).to(dtype=dtype).eval()  # type: ignore[call-arg]  # transformers types .to without self


def tiny_model(
    model_type: str,
    *,
    d_model: int = 64,
    n_layers: int = 3,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    vocab: int = TINY_VOCAB,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    **config: Any,
) -> PreTrainedModel:
    """A random causal LM of any HF family, from transformers' own config class for ``model_type``.

    ``config`` overrides or adds config fields (e.g. ``sliding_window=4``, ``num_local_experts=4``).

    >>> tiny_model("qwen3", n_layers=2).config.num_hidden_layers
    2
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    fields: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": d_model,
        "intermediate_size": 2 * d_model,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "max_position_embeddings": 256,
        "pad_token_id": 256,
        "eos_token_id": 259,
        "bos_token_id": None,
        **config,
    }
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(model_type, **fields)
    return AutoModelForCausalLM.from_config(cfg).to(dtype).eval()
