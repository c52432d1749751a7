"""Models with TransformerLens hook points: loading, the embedded default, tiny test models."""

from .arch import ARCHS, ArchSpec, arch_of, get_module, lm_logits
from .hooked import HasHooked, HookedModel, SiteHookPoint, hooked_of
from .loading import cache_dir, embedded_model_path, load_model
from .source import EMBEDDED, EMBEDDED_LABEL, ModelSource, classify
from .tiny import TINY_VOCAB, tiny_gpt2, tiny_llama, tiny_model, tiny_tokenizer

__all__ = [
    "ARCHS",
    "EMBEDDED",
    "EMBEDDED_LABEL",
    "TINY_VOCAB",
    "ArchSpec",
    "HasHooked",
    "HookedModel",
    "ModelSource",
    "SiteHookPoint",
    "arch_of",
    "cache_dir",
    "classify",
    "embedded_model_path",
    "get_module",
    "hooked_of",
    "lm_logits",
    "load_model",
    "tiny_gpt2",
    "tiny_llama",
    "tiny_model",
    "tiny_tokenizer",
]
