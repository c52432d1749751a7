"""``accelerate launch`` runs ``reftlab.train`` and ``ReftTrainerForCausalLMDistributed`` like torchrun.

Two CPU processes started by accelerate's launcher (``--multi_gpu --num_processes 2``: its
torch.distributed launcher, gloo without CUDA) end with the same weights and losses as one
process with the same global batch, write files from rank 0 only and show progress once.
"""

import json
import runpy

import pytest
import torch
from helpers import REPO, accelerate_launch
from safetensors.torch import load_file

pytest.importorskip("accelerate")

# (worker, steps, weight tolerance). The HF Trainer's worker uses pyreft's LoreftIntervention, whose R is
# pyreft's Householder map: Adam turns the last-bit differences of the summed gradients (two ranks' means vs
# one batch's) into ~2e-5 after 4 steps at lr 5e-2. A missing all-reduce differs by ~lr (and rank 0 from rank 1).
WORKERS = {
    "reftlab.train": (REPO / "tests" / "train" / "ddp_loop_worker.py", 6, 1e-5),
    "ReftTrainerForCausalLMDistributed": (REPO / "tests" / "train" / "ddp_worker.py", 4, 1e-4),
}


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
@pytest.mark.parametrize("trainer", list(WORKERS))
def test_two_accelerate_processes_match_one_process_with_the_same_global_batch(tmp_path, trainer):
    worker, steps, atol = WORKERS[trainer]
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    done = accelerate_launch(worker, two)
    assert done.returncode == 0, done.stderr[-3000:]
    runpy.run_path(str(worker))["run"](one)

    rank0, rank1, single = (load_file(str(p)) for p in (two / "rank0.safetensors", two / "rank1.safetensors", one / "rank0.safetensors"))  # fmt: skip
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # gradients were all-reduced
    assert all(torch.allclose(rank0[k], single[k], atol=atol) for k in rank0)
    a, b = json.loads((two / "losses.json").read_text()), json.loads((one / "losses.json").read_text())
    assert a["world"] == 2 and b["world"] == 1 and len(a["losses"]) == len(b["losses"]) == steps
    assert a["losses"] == pytest.approx(b["losses"], abs=1e-5)
    # Rank 0 alone wrote the checkpoints the 1-process run wrote.
    saved = (two / "saves.log").read_text().split()
    assert saved and saved == (one / "saves.log").read_text().split() and set(saved) == {"0"}
    if trainer == "ReftTrainerForCausalLMDistributed":  # fast=None: every loss on the fast path, around DDP
        assert (a["fast_steps"], a["plain_steps"]) == (b["fast_steps"], b["plain_steps"]) == (4, 0)
        assert "takes the plain path" not in done.stderr
    if trainer == "reftlab.train":
        assert (done.stdout + done.stderr).count(f"step {steps}/{steps}  loss") == 1  # progress shown once
