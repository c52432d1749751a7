"""gpu_check's ``vllm`` stage: 3 ReFTs on vLLM against vLLM's base alone and reftlab's own engine.

    python benchmarks/gpu_vllm.py [--tiny --device cpu]     # alone; gpu_check runs stage_vllm()

A random Llama (7B-shaped on a GPU, bfloat16; ``--tiny``: 4 layers) is saved with a byte-level
tokenizer to a temporary folder, with 3 random rank-4 LoReFT checkpoints (``l1``, ``f1+l1``,
``all`` at three layers). 64 requests of random prompt tokens (512 each; tiny: 16), 32 new tokens
(tiny: 4), greedy, each arm in its own process (one vLLM engine holds the GPU at a time), a warm-up
round then the median of ``--repeats`` rounds:

- ``vllm_base``: the base alone, vLLM's defaults (CUDA graphs and torch.compile on a GPU);
- ``vllm_base_eager``: the same with ``enforce_eager`` (what the plugin needs; on a CPU the only
  base arm);
- ``vllm_refts``: the plugin, requests spread over the 3 ReFTs and the base (eager);
- ``reftlab``: reftlab's own engine (transformers' forward) on the same requests.

Goals: vllm_refts / vllm_base >= 0.9 and vllm_refts / reftlab >= 5. ``cuda_graphs`` says whether
the ReFT arm kept CUDA graphs (it does not: the plugin's hooks are Python, ``enforce_eager``).
Without vLLM installed the stage reports ``skipped`` and the fix.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
SPECS = [("l1", 0.25), ("f1+l1", 0.5), ("all", 0.75)]  # positions, depth of the layer


def stage_vllm(device: torch.device, tiny: bool, repeats: int) -> dict[str, Any]:
    if importlib.util.find_spec("vllm") is None:
        return {"skipped": "vLLM is not installed: pip install 'reftlab[vllm]' (a CUDA build) and run again"}
    from gpu_check import SHAPES
    from transformers import LlamaConfig, LlamaForCausalLM

    import reftlab

    # tiny: head_dim 64, which vLLM's CPU attention kernels support (gpu_check's tiny Llama has 16)
    fields = {**SHAPES["tiny"], "hidden_size": 256, "intermediate_size": 512} if tiny else SHAPES["7b"]
    dtype = torch.float32 if tiny or device.type == "cpu" else torch.bfloat16
    n_prompt, n_new = (16, 4) if tiny else (512, 32)
    with tempfile.TemporaryDirectory(prefix="reftlab-gpu-vllm-") as tmp:
        folder = Path(tmp) / "base"
        torch.manual_seed(0)
        config = LlamaConfig(**fields, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
        hf = LlamaForCausalLM._from_config(config, dtype=dtype).eval()
        tok = reftlab.tiny_tokenizer()
        hf.save_pretrained(folder)
        tok.save_pretrained(folder)
        hooked = reftlab.load_model(hf, tok)
        layers = fields["num_hidden_layers"]
        refts = {}
        for i, (positions, depth) in enumerate(SPECS):
            torch.manual_seed(i)
            rep = {"layer": int(depth * layers), "component": "block_output", "positions": positions}
            rep |= {"kind": "loreft", "rank": 4}
            reft = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[rep])).eval()
            refts[f"r{i}"] = str(reft.save(Path(tmp) / f"r{i}"))
        vocab = fields["vocab_size"]
        g = torch.Generator().manual_seed(0)
        prompts = [torch.randint(3, min(vocab, 256), (n_prompt,), generator=g).tolist() for _ in range(64)]
        routes = [[] if i % 4 == 3 else [f"r{i % 4}"] for i in range(64)]
        job = {"prompts": prompts, "routes": routes, "new": n_new, "repeats": repeats, "device": device.type}
        base = job | {"refts": {}, "routes": [[]] * 64}
        arms = {"vllm_base_eager": _arm(folder, base | {"eager": True}, dtype, tmp)}
        # on a CPU there are no CUDA graphs to keep (and compiling would only slow the dry run)
        gpu = device.type == "cuda"
        arms["vllm_base"] = _arm(folder, base | {"eager": False}, dtype, tmp) if gpu else arms["vllm_base_eager"]
        arms["vllm_refts"] = _arm(folder, job | {"refts": refts, "eager": True}, dtype, tmp)
        arms["reftlab"] = _own_engine(hooked.to(device), refts, job)
    rate = {k: v["tokens_per_s"] for k, v in arms.items()}
    return {
        "tokens_per_s": rate,
        "refts_vs_base": round(rate["vllm_refts"] / rate["vllm_base"], 3),
        "refts_vs_base_eager": round(rate["vllm_refts"] / rate["vllm_base_eager"], 3),
        "refts_vs_reftlab_engine": round(rate["vllm_refts"] / rate["reftlab"], 3),
        "cuda_graphs": {"vllm_base": device.type == "cuda", "vllm_refts": False},
        "greedy_refts_equal_reftlab": arms["vllm_refts"]["ids"] == arms["reftlab"]["ids"],
        "requests": 64,
        "prompt_tokens": n_prompt,
        "new_tokens": n_new,
    }


def _arm(folder: Path, job: dict[str, Any], dtype: torch.dtype, tmp: str) -> dict[str, Any]:
    """One vLLM configuration in its own process (``--arm``): tokens/s and each request's ids."""
    spec = Path(tmp) / "job.json"
    spec.write_text(json.dumps(job | {"model": str(folder), "dtype": str(dtype).removeprefix("torch.")}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, __file__, "--arm", str(spec)], capture_output=True, text=True, env=env, timeout=3600
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode or not lines:
        raise RuntimeError(f"vLLM arm failed ({out.returncode}): {out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_arm(spec: Path) -> None:
    """Inside the arm's process: an in-process vLLM engine, warm-up round, then timed rounds."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    job = json.loads(spec.read_text())
    kw: dict[str, Any] = {"kv_cache_memory_bytes": 1 << 30} if job["device"] == "cpu" else {}
    llm = LLM(
        model=job["model"],
        dtype=job["dtype"],
        enforce_eager=job["eager"],
        seed=0,
        max_model_len=len(job["prompts"][0]) + job["new"] + 8,
        additional_config={"reftlab": {"refts": job["refts"]}} if job["refts"] else {},
        **kw,
    )
    params = [
        SamplingParams(max_tokens=job["new"], temperature=0, ignore_eos=True, extra_args={"reftlab": r} if r else None)
        for r in job["routes"]
    ]
    prompts = [{"prompt_token_ids": p} for p in job["prompts"]]
    rates, ids = [], []
    for round_ in range(job["repeats"] + 1):
        t0 = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        made = sum(len(o.outputs[0].token_ids) for o in outs)
        if round_:
            rates.append(made / (time.perf_counter() - t0))
        ids = [list(o.outputs[0].token_ids) for o in outs]
    print(json.dumps({"tokens_per_s": round(statistics.median(rates), 1), "ids": ids}))


def _own_engine(hooked: Any, paths: dict[str, str], job: dict[str, Any]) -> dict[str, Any]:
    """reftlab's own engine on the same requests (all at once, up to 64 rows)."""
    import reftlab
    from reftlab.serve import Engine, Request, Sampling

    refts = {n: reftlab.ReftModel.load(p, hooked).eval() for n, p in paths.items()}
    engine = Engine(hooked, refts, max_batch=64)
    engine.runner.stop_ids = [-1]  # as ignore_eos: every request makes its new tokens
    rates, ids = [], []
    for round_ in range(job["repeats"] + 1):
        reqs = [
            Request(list(p), tuple(r), Sampling(max_tokens=job["new"]), lambda e: None)
            for p, r in zip(job["prompts"], job["routes"])
        ]
        t0 = time.perf_counter()
        for req in reqs:
            engine.add(req)
        while engine.step():
            pass
        if round_:
            rates.append(sum(len(r.generated) for r in reqs) / (time.perf_counter() - t0))
        ids = [r.generated for r in reqs]
    return {"tokens_per_s": round(statistics.median(rates), 1), "ids": ids}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--arm", type=Path, help=argparse.SUPPRESS)  # internal: one vLLM configuration
    args = ap.parse_args()
    if args.arm:
        run_arm(args.arm)
        return
    sys.path.insert(0, str(REPO / "benchmarks"))
    print(json.dumps(stage_vllm(torch.device(args.device), args.tiny, args.repeats)))


if __name__ == "__main__":
    main()
