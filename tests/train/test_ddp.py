"""reftlab.train under torchrun: 2 CPU processes (gloo) train like 1 with their global batch,
survive a crash of one rank with the last checkpoint intact, and resume from it."""

import json
import runpy

import pytest
import torch
from helpers import REPO, torchrun
from safetensors.torch import load_file

from reftlab.train import ddp

WORKER = REPO / "tests" / "train" / "ddp_loop_worker.py"


def test_shard_splits_each_global_micro_batch_into_contiguous_rank_slices():
    micro = [[0, 1, 2, 3], [4, 5, 6]]  # world 2 x batch 2, the last one short
    assert ddp.shard(micro, ddp.Ranks(0, 2), 2) == [[0, 1], [4, 5]]
    assert ddp.shard(micro, ddp.Ranks(1, 2), 2) == [[2, 3], [6]]
    assert ddp.shard([[7]], ddp.Ranks(1, 2), 2) == []  # nothing left for rank 1: it sends zero gradients


def test_one_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with ddp.process_group(torch.device("cpu")) as ranks:
        assert ranks == ddp.Ranks(0, 1) and not ranks.active
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc-per-node N"), ddp.process_group(torch.device("cpu")):
        pass


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_crash_keeps_the_last_checkpoint_and_a_resumed_two_process_run_matches_one_process(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()

    # Rank 1 fails after step 3: the run ends with a clear error, step-2 is complete.
    crashed = torchrun(WORKER, two, env={"CRASH_AT": "1:3"})
    assert crashed.returncode != 0
    assert "reftlab.train: rank 1 of 2 failed: step 3, RuntimeError: injected crash" in crashed.stderr
    assert f"the last complete checkpoint is {two / 'ckpt' / 'step-2'}" in crashed.stderr
    assert sorted(p.name for p in (two / "ckpt").iterdir() if not p.name.startswith(".")) == ["step-2"]
    state = json.loads((two / "ckpt" / "step-2" / "state.json").read_text())
    assert state["step"] == 2 and state["world_size"] == 2 and len(state["losses"]) == 2
    assert {"rng.torch.rank0", "rng.torch.rank1"} <= set(load_file(str(two / "ckpt" / "step-2" / "tensors.safetensors")))  # fmt: skip

    # Resumed under torchrun, it finishes; one process with the global batch runs uninterrupted.
    resumed = torchrun(WORKER, two, env={"RESUME": "1"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runpy.run_path(str(WORKER))["run"](one)

    rank0, rank1, single = (load_file(str(p)) for p in (two / "rank0.safetensors", two / "rank1.safetensors", one / "rank0.safetensors"))  # fmt: skip
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # gradients were all-reduced
    assert all(torch.allclose(rank0[k], single[k], atol=1e-5) for k in rank0)
    at_2 = load_file(str(two / "ckpt" / "step-2" / "tensors.safetensors"))
    assert not torch.allclose(rank0["weight"], at_2["intervention.layer_1_comp_block_output#0.weight"])  # it trained on
    a, b = json.loads((two / "losses.json").read_text()), json.loads((one / "losses.json").read_text())
    assert a["world"] == 2 and b["world"] == 1 and len(a["losses"]) == len(b["losses"]) == 6
    assert a["losses"] == pytest.approx(b["losses"], abs=1e-5)

    # Rank 0 alone wrote checkpoints (step 2 before the crash, step 4 after resuming) and logged.
    assert (two / "saves.log").read_text().split() == ["0", "0"]
    assert resumed.stdout.count("step 6/6  loss") == 1
