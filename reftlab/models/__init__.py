"""Models with TransformerLens hook points: loading, the embedded default, tiny test models."""

from .arch import ARCHS, ArchSpec, arch_of, get_module
from .hooked import HookedModel, SiteHookPoint
from .loading import EMBEDDED, cache_dir, embedded_model_path, load_model
from .tiny import TINY_VOCAB, tiny_gpt2, tiny_llama, tiny_tokenizer

__all__ = [
    "ARCHS", "ArchSpec", "arch_of", "get_module", "HookedModel", "SiteHookPoint", "EMBEDDED", "cache_dir",
    "embedded_model_path", "load_model", "TINY_VOCAB", "tiny_gpt2", "tiny_llama", "tiny_tokenizer",
]
