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
    assert step["time_ratio_cold"] > 0 and abs(step["first_losses"]["naive"] - step["first_losses"]["fast_cold"]) < 0.05
    quantized = report["quantized"]
    assert quantized["loss_falls"] and quantized["generate_without_interventions_equals_hf"]
    assert quantized["fast_path"] and quantized["fast_path_error"] is None
    assert quantized["intervention_dtype"] == "torch.float32" and quantized["generated_tokens"] == [8, 8]
    assert report["offload"]["logits_equal_undispatched"] and report["offload"]["intervention_device"] == "cpu"
    assert report["ddp"]["equal_within_1e-5"] and len(report["ddp"]["losses_two_one"][0]) == 6
