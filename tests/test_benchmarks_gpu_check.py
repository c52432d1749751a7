"""benchmarks/gpu_check.py: the no-CUDA answer, and every stage's code path dry-run on tiny CPU models."""

import json
import os
import subprocess
import sys

from helpers import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=400)


def test_without_cuda_it_prints_one_json_object_saying_so_and_exits_0():
    done = run()
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["cuda"] is False and "no CUDA" in report["skipped"] and report["torch"]


def test_the_tiny_cpu_dry_run_passes_every_stage():
    done = run("--device", "cpu", "--tiny")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert report["errors"] == [], {k: report[k].get("error") for k in report["errors"]}
    assert report["overhead"]["forward_ratio"] > 0 and report["overhead"]["generate_ratio"] > 0
    step = report["train_step"]
    assert step["time_ratio_cold"] > 0
    # Fast vs naive at the same weights (before any step), the bfloat16 tolerance, gradients included.
    parity = step["parity"]
    assert parity["ok"] and parity["tolerance"] == 1e-2 and parity["reference"] == "naive"
    assert parity["fast"]["loss_rel_diff"] <= 1e-2 and parity["fast"]["grad_rel_diff"] <= 1e-2
    quantized = report["quantized"]
    assert quantized["loss_falls"] and quantized["generate_without_interventions_equals_hf"]
    assert quantized["fast_path"] and quantized["fast_path_error"] is None
    assert quantized["intervention_dtype"] == "torch.float32" and quantized["generated_tokens"] == [8, 8]
    assert report["offload"]["logits_equal_undispatched"] and report["offload"]["intervention_device"] == "cpu"
    assert report["ddp"]["equal_within_1e-5"] and len(report["ddp"]["losses_two_one"][0]) == 6
    # this venv has no vLLM (tests/serve/test_vllm.py dry-runs the stage in the vLLM venv)
    assert "vLLM is not installed" in report["vllm"]["skipped"]


def test_the_parity_check_catches_a_two_percent_error_in_a_gradient():
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
    x = torch.tensor([0.5, 1.0, 2.0])
    exact = module.same_weights_parity({"a": lambda: (w * x).sum(), "b": lambda: (w * x).sum()}, [w], 1e-2)
    assert exact["ok"] and exact["b"] == {"loss_rel_diff": 0.0, "grad_rel_diff": 0.0}
    # Same loss value, one gradient entry 2% off the largest: the loss alone would not show it.
    skewed = module.same_weights_parity(
        {"a": lambda: (w * x).sum(), "b": lambda: (w * x).sum() + 0.04 * (w[0] - w[0].detach())}, [w], 1e-2
    )
    assert not skewed["ok"] and skewed["b"]["loss_rel_diff"] == 0.0 and abs(skewed["b"]["grad_rel_diff"] - 0.02) < 1e-6
    assert w.grad is None  # it leaves no gradient behind


def test_make_gpu_check_finds_a_python_with_torch_or_says_which_to_use_in_json(tmp_path):
    # python3 on PATH without torch (this machine's own, or a bare GPU image's): make falls back
    # to the project's venv (PY) and the JSON contract holds.
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python3").write_text('#!/bin/sh\nexec "$REAL" -S "$@"\n')  # -S: no site-packages, so no torch
    (bare / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bare}:{os.environ['PATH']}", "REAL": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    assert subprocess.run(["python3", "-c", "import torch"], env=env, capture_output=True).returncode != 0
    done = subprocess.run(
        ["make", "-s", "gpu-check", f"PY={sys.executable}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["cuda"] is False and report["torch"], report
    # The script itself under a python without torch: one JSON line naming the fix, exit 1.
    bare_run = subprocess.run([sys.executable, "-S", str(SCRIPT)], env=env, capture_output=True, text=True)
    assert bare_run.returncode == 1, bare_run.stderr[-2000:]
    report = json.loads(bare_run.stdout.strip().splitlines()[-1])
    assert report["error"].startswith("no torch in") and "GPU_PYTHON=" in report["fix"]
