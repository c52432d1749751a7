"""Shared test helpers (``tests/`` is on ``sys.path``: ``from helpers import ...``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


def no_hooks_anywhere(hooked) -> bool:
    """True when no hook point holds a hook and no HF module holds a tap of ours.

    (transformers 5 keeps its own output-capturing hooks on the layers once
    ``output_hidden_states`` was used; those are not ours.)
    """
    from transformer_lens.hook_points import HookPoint

    if any(hp.fwd_hooks or hp.bwd_hooks or hp._forward_hooks for hp in hooked.hook_dict.values()):
        return False
    for m in hooked.model.modules():
        for fn in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]:
            if isinstance(getattr(fn, "__self__", None), HookPoint):
                return False
    return True


def rotated(d: int, angles_deg: list[float]):
    """Two orthonormal float64 [r, d] bases whose principal angles are exactly ``angles_deg``, in a random frame."""
    import torch

    r = len(angles_deg)
    e = torch.eye(d, dtype=torch.float64)
    b = torch.stack(
        [math.cos(math.radians(t)) * e[i] + math.sin(math.radians(t)) * e[r + i] for i, t in enumerate(angles_deg)]
    )
    q = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))[0]  # a random rotation of the whole space
    return e[:r] @ q, b @ q


def tiny_classifier(tok, n_layers: int = 2, num_labels: int = 2):
    """A tiny random LlamaForSequenceClassification (d_model 64) whose pad token is the tokenizer's."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig(
        vocab_size=260,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tok.pad_token_id,
        num_labels=num_labels,
    )
    return LlamaForSequenceClassification(cfg).eval()


def torchrun(script, *args, nproc: int = 2, env: dict | None = None, timeout: int = 300):
    """Run ``script args`` under ``torchrun --standalone --nproc-per-node nproc`` (one OpenMP thread each).

    Returns the ``CompletedProcess`` (text stdout/stderr); the caller checks ``returncode``.
    """
    import os
    import subprocess
    import sys

    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)]
    cmd += [str(script), *map(str, args)]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


@contextmanager
def as_users_see_it() -> Iterator[None]:
    """Switch the test suite's runtime type checks (jaxtyping + beartype) off for a block.

    Users do not run a runtime type checker: a wrong value reaches the library's own checks,
    whose errors are what they see. The ``user_errors`` marker does this for a whole test.
    """
    import jaxtyping

    was = jaxtyping.config.jaxtyping_disable
    jaxtyping.config.update("jaxtyping_disable", True)
    try:
        yield
    finally:
        jaxtyping.config.update("jaxtyping_disable", was)


def accelerate_launch(script, *args, nproc: int = 2, env: dict | None = None, timeout: int = 300):
    """Run ``script args`` under ``accelerate launch --multi_gpu --num_processes nproc`` on the CPU.

    ``--multi_gpu`` is accelerate's torch.distributed launcher (it runs torch's elastic
    launcher; without CUDA each process trains on the CPU over gloo); ``--cpu`` with several
    processes would need MPI (see docs/scale.md). ``HF_HOME`` points into a fresh folder so a
    user's ``accelerate config`` file cannot change the launch. Returns the ``CompletedProcess``.
    """
    import os
    import subprocess
    import sys
    import tempfile

    home = tempfile.mkdtemp(prefix="reftlab-accelerate-")
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": home, **(env or {})}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc)]
    cmd += ["--num_machines", "1", "--main_process_port", "0", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += [str(script), *map(str, args)]
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


def arch_families() -> dict:
    """``FAMILIES`` of the architecture matrix (``tests/models/test_architectures.py``): family -> config fields."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_arch_matrix", REPO / "tests/models/test_architectures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FAMILIES
