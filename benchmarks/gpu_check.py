"""The one-call GPU acceptance run: everything of reftlab that needs CUDA, in one process, one JSON object.

    make gpu-check                                   # = python benchmarks/gpu_check.py
    python benchmarks/gpu_check.py --device cpu --tiny   # the same stages on tiny models (a dry run; tested)

Stages (each in its own try/except: a failing stage records its error and the run goes on):

1. ``overhead``: a 7B-shaped random Llama in bfloat16 (d_model 4096, 32 layers, d_ff 11008,
   vocab 32000), batch 8 x 512, one rank-4 LoReFT at layer 15 on the last prompt token:
   forward and greedy generation (32 new tokens, KV cache) / the untouched HF model. Goal <= 1.02.
2. ``train_step``: one optimizer step of ``reftlab.train``'s fast path (cached prefix, packed rows,
   logits only where scored), cold (cache cleared every step) and warm (the cache of earlier
   epochs), against a naive ReFT step (full HF forward with full logits + backward): time and
   peak memory above the weights. Goal <= 0.6. Before any timing, at the same weights, the fast
   path's loss and every intervention gradient are compared with the naive step's (relative,
   within 1e-2 on the bfloat16 base, 1e-5 in float32): a mismatch makes the stage an error.
3. ``quantized``: a 1B-shaped random Llama saved and loaded back 4-bit (bitsandbytes nf4,
   ``device_map={"": 0}``): 20 steps of ``reftlab.train`` (the loss falls), generation with and
   without the intervention (without it, the tokens equal the HF model's).
4. ``offload``: the same kind of base with half its blocks offloaded to CPU RAM by accelerate:
   interventions land on the GPU, logits equal the base on the GPU alone.
5. ``ddp``: with 2+ GPUs, ``reftlab.train`` under ``torchrun --nproc-per-node 2`` (NCCL) against one
   process with the global batch: largest weight difference (float32).
6. ``vllm``: 3 ReFTs served on vLLM through reftlab's plugin against vLLM's base alone (CUDA graphs
   on) and reftlab's own engine, 64 requests (``benchmarks/gpu_vllm.py``; skipped without vLLM).
   Goals: >= 0.9x vLLM's base tokens/s, >= 5x reftlab's engine.

Timings are interleaved warm medians of ``--repeats`` (>= 5) runs. Without CUDA (and without
``--device cpu``) the script prints ``{"cuda": false, ...}`` and exits 0. It needs reftlab's
dependencies (torch, transformers, accelerate, transformer-lens, jaxtyping, safetensors, pandas,
datasets, tqdm, pyyaml) and bitsandbytes for stage 3; ``make gpu-check`` first installs the
wheels in ``.whl/`` that the machine lacks (``bash benchmarks/gpu_wheels.sh download`` fills it
on a machine with a network), then runs this file with the repo on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import torch
except ImportError:  # this interpreter has no torch: main() says which python to use, as JSON
    torch = None  # type: ignore[assignment]

NEEDED = ["transformers", "accelerate", "transformer_lens", "jaxtyping", "safetensors", "pandas", "datasets", "yaml", "tqdm"]  # fmt: skip
SHAPES = {  # LlamaConfig fields
    "7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
    "1b": dict(
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=4,
        vocab_size=32000,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=260,
    ),
}
REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--device", default=None, help="cuda (default when present) or cpu (a dry run with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="tiny models and batches: check the code paths, not speed")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--stages", default="overhead,train_step,quantized,offload,ddp,vllm")
    ap.add_argument("--ddp-worker", default=None, help=argparse.SUPPRESS)  # internal: one torchrun rank
    args = ap.parse_args(argv)
    if torch is None:
        fix = "make gpu-check GPU_PYTHON=/path/to/python (one with CUDA torch), or build .venv (make setup)"
        print(json.dumps({"cuda": None, "error": f"no torch in {sys.executable}", "fix": fix}))
        return 1
    if args.ddp_worker:
        ddp_worker(Path(args.ddp_worker), args.tiny)
        return 0
    if args.device is None and not torch.cuda.is_available():
        print(json.dumps({"cuda": False, "skipped": "no CUDA device: nothing to check here", **environment()}))
        return 0
    device = torch.device(args.device or "cuda")
    report: dict[str, Any] = {"cuda": device.type == "cuda", "tiny": args.tiny, **environment()}
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        report["missing"] = missing
        report["fix"] = "bash benchmarks/gpu_wheels.sh download (with a network), copy .whl/ along, make gpu-check"
        print(json.dumps(report))
        return 1
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "benchmarks"))
    torch.manual_seed(0)
    t_start = time.perf_counter()
    stages: dict[str, Callable[[], dict[str, Any]]] = {
        "overhead": lambda: stage_overhead(device, args.tiny, args.repeats),
        "train_step": lambda: stage_train_step(device, args.tiny, args.repeats),
        "quantized": lambda: stage_quantized(device, args.tiny),
        "offload": lambda: stage_offload(device, args.tiny),
        "ddp": lambda: stage_ddp(device, args.tiny),
        "vllm": lambda: _vllm_stage(device, args.tiny, args.repeats),
    }
    for name in args.stages.split(","):
        t0 = time.perf_counter()
        try:
            report[name] = stages[name]()
        except Exception as e:  # record and go on: one JSON object at the end, whatever happens
            report[name] = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
        report[name]["seconds"] = round(time.perf_counter() - t0, 1)
        free_memory()
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    report["errors"] = [k for k, v in report.items() if isinstance(v, dict) and "error" in v]
    print(json.dumps(report))
    return 0


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "accelerate", "bitsandbytes", "transformer_lens"):
        spec = importlib.util.find_spec(name)
        env[name] = _version(name) if spec is not None else None
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    env["threads"] = torch.get_num_threads()
    return env


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version({"transformer_lens": "transformer-lens"}.get(name, name))
    except PackageNotFoundError:
        return "unknown"


# --- models and data ---------------------------------------------------------------------
def _vllm_stage(device: torch.device, tiny: bool, repeats: int) -> dict[str, Any]:
    from gpu_vllm import stage_vllm

    return stage_vllm(device, tiny, repeats)


def random_llama(shape: str, dtype: torch.dtype, device: torch.device, seed: int = 0) -> Any:
    """A random Llama built on ``device`` in ``dtype`` (no weights read from anywhere)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**SHAPES[shape], pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype)
    return model.to(device=device, dtype=dtype).eval()  # a no-op unless the device context was ignored


def synthetic_examples(n: int, prompt: int, response: int, vocab: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` examples of random tokens: ``prompt`` prompt tokens (LoReFT on the last), ``response`` scored."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (prompt + response,), generator=g)
        labels = ids.clone()
        labels[:prompt] = -100
        out.append(
            {"input_ids": ids, "labels": labels, "intervention_locations": [[prompt - 1]], "prompt_length": prompt}
        )
    return out


def reft_on(hooked: Any, layer: int) -> Any:
    import reftlab

    rep = {
        "layer": layer,
        "component": "block_output",
        "positions": "l1",
        "intervention": {"kind": "loreft", "rank": 4},
    }
    return reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[rep]))


def sizes(tiny: bool) -> dict[str, int]:
    if tiny:
        return {"batch": 2, "seq": 16, "new": 4, "layer": 1, "response": 4}
    return {"batch": 8, "seq": 512, "new": 32, "layer": 15, "response": 64}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# Relative tolerance of the fast-vs-naive check: float32 agrees to rounding; a bfloat16 base
# (8 bits of mantissa, ~4e-3 per rounding) to about 1e-2 over a 7B-shaped forward and backward.
PARITY_TOLERANCE = {"torch.float32": 1e-5, "torch.bfloat16": 1e-2, "torch.float16": 5e-3}


def same_weights_parity(
    losses: dict[str, Callable[[], torch.Tensor]], params: list[torch.nn.Parameter], tolerance: float
) -> dict[str, Any]:
    """Each loss function's loss and gradients at the *same* weights (no optimizer step between),
    compared with the first one's: relative loss difference and largest gradient difference over
    the largest gradient. ``ok`` when both are within ``tolerance``.

    >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    >>> same_weights_parity({"a": lambda: (w * w).sum(), "b": lambda: (w * w).sum()}, [w], 1e-6)["ok"]
    True
    >>> same_weights_parity({"a": lambda: (w * w).sum(), "b": lambda: 1.02 * (w * w).sum()}, [w], 1e-2)["ok"]
    False
    """
    results = {}
    for name, fn in losses.items():
        for p in params:
            p.grad = None
        loss = fn()
        loss.backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.detach().float().clone() for p in params]
        results[name] = (float(loss.detach()), grads)
    for p in params:
        p.grad = None
    (ref_name, (ref_loss, ref_grads)), *others = results.items()
    scale = max(float(g.abs().max()) for g in ref_grads) or 1.0
    out: dict[str, Any] = {"reference": ref_name, "tolerance": tolerance, "losses": {}, "ok": True}
    for name, (loss, grads) in others:
        loss_rel = abs(loss - ref_loss) / max(abs(ref_loss), 1e-12)
        grad_rel = max(float((g - r).abs().max()) for g, r in zip(grads, ref_grads)) / scale
        out[name] = {"loss_rel_diff": loss_rel, "grad_rel_diff": grad_rel}
        out["ok"] = out["ok"] and loss_rel <= tolerance and grad_rel <= tolerance
    out["losses"] = {name: round(loss, 6) for name, (loss, _) in results.items()}
    return out


# --- stages -------------------------------------------------------------------------------
def stage_overhead(device: torch.device, tiny: bool, repeats: int) -> dict[str, Any]:
    from timing import interleaved  # benchmarks/timing.py

    import reftlab

    s = sizes(tiny)
    base = random_llama("tiny" if tiny else "7b", torch.bfloat16, device)
    hooked = reftlab.load_model(base, reftlab.tiny_tokenizer())  # the same HF model, untouched when no hooks
    reft = reft_on(hooked, s["layer"]).eval()
    ids = torch.randint(3, base.config.vocab_size, (s["batch"], s["seq"]), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    mask = torch.ones_like(ids)
    gen = {"max_new_tokens": s["new"], "min_new_tokens": s["new"], "do_sample": False, "pad_token_id": 0}
    runs = {
        "hf_forward": lambda: base(input_ids=ids, attention_mask=mask),
        "reft_forward": lambda: reft.run(ids, mask),
        "hf_generate": lambda: base.generate(input_ids=ids, attention_mask=mask, **gen),
        "reft_generate": lambda: reft.generate({"input_ids": ids, "attention_mask": mask}, **gen),
    }
    med, _ = interleaved(runs, repeats)
    return {
        "model": "random Llama " + ("tiny" if tiny else "7B-shaped") + ", bfloat16",
        "batch": f"{s['batch']} x {s['seq']}",
        "ms": {k: round(v * 1000, 2) for k, v in med.items()},
        "forward_ratio": round(med["reft_forward"] / med["hf_forward"], 4),
        "generate_ratio": round(med["reft_generate"] / med["hf_generate"], 4),
        "goal": "<= 1.02",
    }


def stage_train_step(device: torch.device, tiny: bool, repeats: int) -> dict[str, Any]:
    import reftlab
    from reftlab.data.collate import ReftDataCollator
    from reftlab.train.fast_forward import FastForward

    s = sizes(tiny)
    base = random_llama("tiny" if tiny else "7b", torch.bfloat16, device)
    reft = reft_on(reftlab.load_model(base, reftlab.tiny_tokenizer()), s["layer"])
    prompt = s["seq"] - s["response"]
    examples = synthetic_examples(s["batch"], prompt, s["response"], base.config.vocab_size)
    collate = ReftDataCollator(pad_token_id=0)
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in collate(examples).items()}
    params = [p for p in reft.interventions.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    fast = FastForward(reft)
    keys = list(range(len(examples)))

    def step(loss_fn: Callable[[], torch.Tensor]) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        return float(loss)

    def naive() -> float:  # full HF forward, full [batch, pos, vocab] logits, HF's loss, backward
        _, out = reft(
            {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]},
            unit_locations={"sources->base": (None, batch["intervention_locations"].permute(1, 0, 2).tolist())},
            labels=batch["labels"],
        )
        return out.loss

    def cold() -> torch.Tensor:
        fast._cache.clear()
        fast._used = 0
        return fast.loss(batch, keys=keys)

    # Exactness first, at the same weights (before any optimizer step): loss and every gradient.
    parity = same_weights_parity({"naive": naive, "fast": cold}, params, tolerance=PARITY_TOLERANCE[str(base.dtype)])
    runs = {"naive": lambda: step(naive), "fast_cold": lambda: step(cold), "fast_warm": lambda: step(lambda: fast.loss(batch, keys=keys))}  # fmt: skip
    losses = {k: fn() for k, fn in runs.items()}  # warm-up (and the warm cache is filled)
    times: dict[str, list[float]] = {k: [] for k in runs}
    peaks: dict[str, int] = {}
    for _ in range(repeats):
        for name, fn in runs.items():
            if device.type == "cuda":
                sync(device)
                before = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            if device.type == "cuda":
                peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated(device) - before)
    med = {k: statistics.median(v) for k, v in times.items()}
    out: dict[str, Any] = {
        "ms": {k: round(v * 1000, 2) for k, v in med.items()},
        "time_ratio_cold": round(med["fast_cold"] / med["naive"], 4),
        "time_ratio_warm": round(med["fast_warm"] / med["naive"], 4),
        "first_losses": {k: round(v, 4) for k, v in losses.items()},
        "parity": parity,
        "goal": "<= 0.6",
    }
    if not parity["ok"]:
        out["error"] = f"the fast path's loss or gradients differ from the naive step's: {parity}"
    if peaks:
        out["peak_mb_above_weights"] = {k: round(v / 2**20, 1) for k, v in peaks.items()}
        out["memory_ratio_cold"] = round(peaks["fast_cold"] / peaks["naive"], 4)
        out["memory_ratio_warm"] = round(peaks["fast_warm"] / peaks["naive"], 4)
    return out


def stage_quantized(device: torch.device, tiny: bool) -> dict[str, Any]:
    import pandas as pd

    import reftlab

    s = sizes(tiny)
    tok = reftlab.tiny_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        random_llama("tiny" if tiny else "1b", torch.bfloat16, device).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        free_memory()
        if device.type == "cuda":
            hooked = reftlab.load_model(tmp, quantization="nf4", device_map={"": device.index or 0})
        else:  # the CPU dry run: torchao's int8 (bitsandbytes needs CUDA)
            hooked = reftlab.load_model(tmp, quantization="torchao-int8")
    from reftlab.models.quantize import describe

    reft = reft_on(hooked, s["layer"])
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    frame = pd.DataFrame({"prompt": [f"Say {w}:" for w in words], "response": [w.upper() for w in words]})
    dataset = reftlab.build_dataset(frame, tok, positions="l1")
    settings = dict(max_steps=20, batch_size=8, lr=2e-2, progress=False, log_every=0)
    fast_error = None
    try:
        result = reftlab.train(reft, dataset, **settings)
    except Exception as e:  # the fast path failed on this base: record it, train on the plain path
        fast_error = f"{type(e).__name__}: {e}"
        reft = reft_on(hooked, s["layer"])
        result = reftlab.train(reft, dataset, fast=False, **settings)
    prompts = ["Say alpha:", "Say golf:"]
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left").to(hooked.device)
    plain = hooked.hf_model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=0)
    without = reftlab.generate(reft, prompts, max_new_tokens=8, interventions=False)
    edited = reftlab.generate(reft, prompts, max_new_tokens=8)
    width = enc["input_ids"].shape[1]
    return {
        "quantization": describe(hooked.hf_model),
        "intervention_dtype": str(next(reft.interventions.parameters()).dtype),
        "fast_path": result.fast,
        "fast_path_error": fast_error,
        "loss_first_last": [round(result.losses[0], 4), round(result.losses[-1], 4)],
        "loss_falls": result.losses[-1] < result.losses[0],
        "generate_without_interventions_equals_hf": [list(x) for x in without.ids] == plain[:, width:].tolist(),
        "generated_tokens": [len(x) for x in edited.ids],
        "base_memory_mb": round(hooked.hf_model.get_memory_footprint() / 2**20, 1),
    }


def stage_offload(device: torch.device, tiny: bool) -> dict[str, Any]:
    import reftlab

    s = sizes(tiny)
    shape = "tiny" if tiny else "1b"
    n = SHAPES[shape]["num_hidden_layers"]
    where: Any = (device.index or 0) if device.type == "cuda" else "cpu"
    dmap = {"model.embed_tokens": where, "model.rotary_emb": where, "model.norm": where, "lm_head": where}
    dmap.update({f"model.layers.{i}": (where if i < n // 2 else "cpu") for i in range(n)})
    with tempfile.TemporaryDirectory() as tmp:
        random_llama(shape, torch.bfloat16, device).save_pretrained(tmp)
        reftlab.tiny_tokenizer().save_pretrained(tmp)
        free_memory()
        dispatched = reftlab.load_model(tmp, dtype="bfloat16", device_map=dmap)
        whole = reftlab.load_model(tmp, dtype="bfloat16", device=device)
    layer = n - 2  # an offloaded block: it runs on the main device
    reft = reft_on(dispatched, layer)
    ids = torch.randint(3, 250, (2, s["seq"]), generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        a, b = dispatched(ids).logits, whole(ids).logits
        edited = reft.run(ids, torch.ones_like(ids)).logits
    return {
        "device_map": "first half of the blocks on the device, the rest offloaded to CPU RAM",
        "logits_equal_undispatched": torch.equal(a, b),
        "logits_max_diff": float((a.float() - b.float()).abs().max()),
        "intervention_device": str(next(reft.interventions.parameters()).device),
        "site_device": str(dispatched.site_device(f"blocks.{layer}.hook_resid_post")),
        "edited_logits_finite": bool(torch.isfinite(edited).all()),
    }


def stage_ddp(device: torch.device, tiny: bool) -> dict[str, Any]:
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        return {"skipped": f"{torch.cuda.device_count()} GPU: DDP needs 2"}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
        if device.type != "cuda":
            env["CUDA_VISIBLE_DEVICES"] = ""
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__]
        cmd += ["--ddp-worker", tmp] + (["--tiny"] if tiny else [])
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            return {"error": f"torchrun exited {done.returncode}", "stderr": done.stderr[-2500:]}
        for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
            os.environ.pop(name, None)
        ddp_worker(Path(tmp), tiny)  # one process, the same global batch
        from safetensors.torch import load_file

        two, one = load_file(f"{tmp}/world2.safetensors"), load_file(f"{tmp}/world1.safetensors")
        diff = max(float((two[k] - one[k]).abs().max()) for k in two)
        losses = json.loads(Path(tmp, "losses2.json").read_text()), json.loads(Path(tmp, "losses1.json").read_text())
    return {
        "processes": 2,
        "max_weight_diff_vs_one_process": diff,
        "losses_two_one": losses,
        "equal_within_1e-5": diff <= 1e-5,
        "torchrun_seconds": round(seconds, 1),
    }


def ddp_worker(out: Path, tiny: bool) -> None:
    """One rank (or the single process) of the DDP stage: 6 steps, global batch 8, float32."""
    import reftlab
    from reftlab.train.ddp import local_device

    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    device = local_device() if torch.cuda.is_available() else torch.device("cpu")
    base = random_llama("tiny" if tiny else "1b", torch.float32, device, seed=0)
    reft = reft_on(reftlab.load_model(base, reftlab.tiny_tokenizer()), 1 if tiny else 8)
    examples = synthetic_examples(16, 12 if tiny else 96, 4 if tiny else 32, base.config.vocab_size, seed=1)
    result = reftlab.train(reft, examples, max_steps=6, batch_size=8 // world, lr=1e-2, progress=False, log_every=0)
    if rank == 0:
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in reft.interventions.state_dict().items()}
        save_file(state, str(out / f"world{world}.safetensors"))
        (out / f"losses{world}.json").write_text(json.dumps([round(x, 6) for x in result.losses]))


if __name__ == "__main__":
    sys.exit(main())
