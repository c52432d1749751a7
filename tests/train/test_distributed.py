"""ReftTrainerForCausalLMDistributed under torchrun: 2 CPU processes (gloo) train like 1 with their global batch,
on the fast path (around the DDP wrapper, gradients all-reduced by the trainer; with gradient
accumulation) and on the plain path (through the wrapper)."""

import json
import runpy

import pytest
import torch
from helpers import REPO, torchrun
from safetensors.torch import load_file

WORKER = REPO / "tests" / "train" / "ddp_worker.py"


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
@pytest.mark.parametrize("fast,grad_accum", [(True, 2), (False, 1)], ids=["fast-accumulating", "plain"])
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, fast, grad_accum):
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    done = torchrun(WORKER, two, str(fast).lower(), grad_accum)
    assert done.returncode == 0, done.stderr[-3000:]
    runpy.run_path(str(WORKER))["run"](one, fast, grad_accum)  # the same run in this process: world size 1

    # Gradients were all-reduced: both ranks hold the same weights, and those of the 1-process run.
    rank0, rank1, single = (load_file(str(p)) for p in (two / "rank0.safetensors", two / "rank1.safetensors", one / "rank0.safetensors"))  # fmt: skip
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    # pyreft's LoreftIntervention (R on pyreft's Householder map): Adam turns last-bit differences of the summed
    # gradients into ~2e-5 after 4 steps at lr 5e-2; a missing all-reduce would differ by ~lr.
    assert all(torch.allclose(rank0[k], single[k], atol=1e-4) for k in rank0)
    a, b = json.loads((two / "losses.json").read_text()), json.loads((one / "losses.json").read_text())
    assert a["world"] == 2 and len(a["losses"]) == len(b["losses"]) == 4
    assert a["losses"] == pytest.approx(b["losses"], abs=1e-5)
    # Every loss took the path asked for (fast=True: a fallback would have been an error), on 2 processes as on 1.
    micro_batches = 4 * grad_accum
    want = {"fast_steps": micro_batches, "plain_steps": 0} if fast else {"fast_steps": 0, "plain_steps": micro_batches}
    assert {k: a[k] for k in want} == {k: b[k] for k in want} == want

    # Checkpoints (steps 2 and 4) and the final save were written by rank 0 only.
    assert (two / "saves.log").read_text().split() == ["0", "0", "0"]
    assert (two / "run" / "checkpoint-4" / "reft" / "interventions.safetensors").is_file()
    assert (two / "final" / "reft" / "interventions.safetensors").is_file()
