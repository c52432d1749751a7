"""The base model's identity in a checkpoint, and the check made when loading onto a model.

Where it came from (format_version 2): ``name`` (a label: the Hub id, the folder, or
``smollm2-135m-instruct (Q4_1 GGUF, dequantized)`` for the embedded model), ``source``
(what ``reftlab.load_model`` takes to load it again: the embedded name, a Hub id or an
absolute folder; null for a model built in memory), ``revision`` (the Hub commit hash)
and ``dtype`` (the base model's dtype when saved). ``ReftModel.load(dir)`` without a
model loads that base. Version-1 records lack these; they are inferred from
``name_or_path`` (the embedded cache folder, a Hub id, or an existing folder).

Identity = architecture (HF class), ``model_type``, d_model, n_layers, vocab size, plus two
fingerprints:

- ``config_sha256``: SHA-256 of the model config as canonical JSON, without the fields
  that do not change what the model computes (``_name_or_path``, ``transformers_version``,
  ``dtype``/``torch_dtype``, ``architectures``, a classifier's ``problem_type``, ...).
- ``weights_fingerprint``: SHA-256 over, for every base parameter in name order, its name,
  shape and ``SAMPLES`` evenly spaced elements cast to bfloat16. Reading ~16 numbers per
  tensor costs milliseconds even on large models, any fine-tune that moves a tensor
  almost surely moves a sampled element, and the bf16 cast makes an fp32 model and its
  bf16 copy agree. peft wrappers are seen through (``base_layer`` is the base weight,
  ``lora_*`` tensors are skipped), so a LoRA-wrapped model matches its base.

``quantization`` labels a quantized base (``"bitsandbytes nf4"``, ``"torchao
Int8WeightOnlyConfig"``; null for full precision; ``reftlab.models.quantize``); the config
hash leaves ``quantization_config`` out, and quantized weights are sampled dequantized.

Loading checks architecture, model_type, d_model, n_layers and vocab size strictly (an
error naming the field); differing fingerprints warn (another fine-tune of the same
architecture) unless ``strict=True``. A checkpoint trained on the full-precision base
loads onto a quantized copy (or the reverse) with a warning that says so, in place of
the weights comparison.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from ..models.peft import base_name, is_lora_parameter
from ..models.quantize import describe as describe_quantization
from ..models.source import ModelSource, guess_source

SAMPLES = 16
WEIGHTS_METHOD = f"sha256-bf16-strided{SAMPLES}"
_VOLATILE = {
    "_name_or_path",
    "transformers_version",
    "dtype",
    "torch_dtype",
    "architectures",
    "_commit_hash",
    "use_cache",
    "output_hidden_states",
    "output_attentions",
    "return_dict",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "attn_implementation",
    "problem_type",  # a classifier's loss kind, set by its first labelled forward; logits do not depend on it
    "quantization_config",  # recorded as ModelIdentity.quantization, compared on its own
}
_STRICT_FIELDS = ("architecture", "model_type", "d_model", "n_layers", "vocab_size")


class FingerprintMismatch(UserWarning):
    """The base model's config or weights differ from those the checkpoint was trained on."""


_SOURCE_FIELDS = ("name", "source", "revision", "dtype")  # new in format_version 2
_OPTIONAL_FIELDS = ("quantization",)  # absent in records written before quantized bases


@dataclass(frozen=True, kw_only=True)
class ModelIdentity:
    """What a checkpoint records about its base model (see the module docstring)."""

    architecture: str
    model_type: str
    d_model: int
    n_layers: int
    vocab_size: int
    name_or_path: str
    config_sha256: str
    weights_fingerprint: str
    name: str = ""
    source: str | None = None
    revision: str | None = None
    dtype: str | None = None
    quantization: str | None = None

    @property
    def model_source(self) -> ModelSource:
        return ModelSource(ref=self.source, revision=self.revision, name=self.name)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "weights_method": WEIGHTS_METHOD}

    @classmethod
    def from_json(cls, data: Any, version: int = 2) -> "ModelIdentity":
        """Parse a record of ``format_version`` ``version`` (1 lacks the source fields)."""
        names = {f.name for f in fields(cls)}
        expected = names | {"weights_method"}
        if version < 2:
            expected -= set(_SOURCE_FIELDS)
        if isinstance(data, dict):
            expected -= {k for k in _OPTIONAL_FIELDS if k not in data}
        if not isinstance(data, dict) or set(data) != expected:
            got = set(data) if isinstance(data, dict) else set()
            missing, extra = sorted(expected - got), sorted(got - expected)
            raise ValueError(f"checkpoint base_model record: missing fields {missing}, unknown fields {extra}")
        if data["weights_method"] != WEIGHTS_METHOD:
            raise ValueError(
                f"checkpoint weights fingerprint method {data['weights_method']!r} is not {WEIGHTS_METHOD!r}"
            )
        values = {k: data[k] for k in names if k in data}
        for key in ("source", "revision", "dtype", "quantization"):
            if values.get(key) is not None and not isinstance(values[key], str):
                raise ValueError(f"checkpoint base_model.{key}={values[key]!r} must be a string or null")
        if version < 2:
            guess = guess_source(str(data["name_or_path"]))
            name = guess.name if guess else str(data["name_or_path"] or data["architecture"])
            values.update(name=name, source=guess.ref if guess else None)
        return cls(**values)


def identify(hooked: Any) -> ModelIdentity:
    """The identity of a ``HookedModel``'s base model (its ``source``, else a guess from its config)."""
    hf = hooked.hf_model
    name_or_path = str(getattr(hf.config, "_name_or_path", "") or "")
    source = hooked.source or guess_source(name_or_path, getattr(hf.config, "_commit_hash", None))
    source = source or ModelSource(ref=None)
    return ModelIdentity(
        architecture=type(hf).__name__,
        model_type=str(hooked.cfg["model_type"]),
        d_model=int(hooked.d_model),
        n_layers=int(hooked.n_layers),
        vocab_size=int(hooked.cfg["d_vocab"]),
        name_or_path=name_or_path,
        config_sha256=config_sha256(hf.config),
        weights_fingerprint=weights_fingerprint(hf),
        name=source.name or type(hf).__name__,
        source=source.ref,
        revision=source.revision,
        dtype=str(hooked.dtype).removeprefix("torch."),
        quantization=describe_quantization(hf),
    )


def config_sha256(config: Any) -> str:
    data = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@torch.no_grad()
def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of ``SAMPLES`` strided bf16 elements of every base parameter (see module doc).

    A parameter offloaded by accelerate (on the meta device) is read from its offload
    (``accelerate.utils.align_module_device``); a quantized tensor subclass without
    strided access is sampled from its dequantized values.
    """
    h = hashlib.sha256()
    for name, (full, p) in sorted(_base_parameters(model).items()):
        sample = _sample(model, full, p)
        h.update(f"{name}:{tuple(p.shape)}:".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()


def _sample(model: nn.Module, name: str, p: torch.Tensor) -> torch.Tensor:
    if p.device.type == "meta":
        from accelerate.utils import align_module_device

        owner_name, leaf = name.rsplit(".", 1) if "." in name else ("", name)
        owner = model.get_submodule(owner_name)
        with align_module_device(owner, torch.device("cpu")):
            return _strided(getattr(owner, leaf))
    return _strided(p)


def _strided(p: torch.Tensor) -> torch.Tensor:
    t = p.detach()
    try:
        flat = t.reshape(-1)
    except (NotImplementedError, RuntimeError):  # e.g. torchao's Int8Tensor has no view
        flat = t.dequantize().reshape(-1)
    n = min(SAMPLES, flat.numel())
    idx = (torch.arange(n, device=flat.device) * (flat.numel() - 1)) // max(n - 1, 1)  # exact integer strides
    return flat[idx].to(device="cpu", dtype=torch.bfloat16).view(torch.int16)


def _base_parameters(model: nn.Module) -> dict[str, tuple[str, torch.Tensor]]:
    """``{name as on the base: (name in model, parameter)}``; peft's wrappers seen through."""
    out: dict[str, tuple[str, torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if is_lora_parameter(name):
            continue
        out[base_name(name)] = (name, p)
    return out


def check_identity(saved: ModelIdentity, hooked: Any, *, strict: bool = False) -> None:
    """Raise if the architecture does not match; warn (or raise if strict) on fingerprints."""
    current = identify(hooked)
    for name in _STRICT_FIELDS:
        want, got = getattr(saved, name), getattr(current, name)
        if want != got:
            raise ValueError(
                f"checkpoint was trained on a model with {name}={want!r}, but this model has {name}={got!r}; "
                f"load it onto the base model it was trained on ({saved.name or saved.name_or_path or saved.architecture})"
            )
    mismatches = []
    if saved.quantization != current.quantization:
        before, now = saved.quantization or "full-precision", current.quantization or "full-precision"
        mismatches.append(
            f"the checkpoint was trained on the {before} base and this base is {now}"
            f"{' (a quantized copy)' if current.quantization else ''}: its weights are not the ones trained on, "
            "so outputs will differ a little from training (the weights fingerprint cannot be compared)"
        )
    checks = [("config_sha256", "config")] + ([("weights_fingerprint", "weights")] if not mismatches else [])
    mismatches += [
        f"the base model's {what} differ from those the checkpoint was trained on "
        f"({name} {getattr(saved, name)[:12]}... != {getattr(current, name)[:12]}...); "
        "outputs may not match the trained ReFT"
        for name, what in checks
        if getattr(saved, name) != getattr(current, name)
    ]
    for msg in mismatches:
        if strict:
            raise ValueError(msg + " (strict=True)")
        warnings.warn(msg + "; pass strict=True to make this an error", FingerprintMismatch, stacklevel=3)
