"""Models with TransformerLens hook points: loading, the embedded default, tiny test models."""

from .arch import ARCHS, ArchSpec, arch_of, get_module, lm_logits
from .hooked import HookedModel, SiteHookPoint
from .loading import EMBEDDED, cache_dir, embedded_model_path, load_model
from .tiny import TINY_VOCAB, tiny_gpt2, tiny_llama, tiny_model, tiny_tokenizer

__all__ = [
    "ARCHS",
    "EMBEDDED",
    "TINY_VOCAB",
    "ArchSpec",
    "HookedModel",
    "SiteHookPoint",
    "arch_of",
    "cache_dir",
    "embedded_model_path",
    "get_module",
    "lm_logits",
    "load_model",
    "tiny_gpt2",
    "tiny_llama",
    "tiny_model",
    "tiny_tokenizer",
]
