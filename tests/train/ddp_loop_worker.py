"""One ``reftlab.train`` run, for ``tests/train/test_ddp.py`` (under torchrun or in-process).

    torchrun --standalone --nproc-per-node 2 ddp_loop_worker.py OUT   # 2 processes, batch 1 each
    python ddp_loop_worker.py OUT                                     # 1 process, batch 2

Both take 6 optimizer steps of a global batch of 4 (2 micro-batches, grad_accum=2) from
8 examples of different lengths, checkpointing every 2 steps into ``OUT/ckpt``.
Environment: ``CRASH_AT=RANK:STEP`` makes that rank raise after that step (a deterministic
crash); ``RESUME=1`` resumes from ``OUT/ckpt``. Writes ``OUT/rank{r}.safetensors`` (final
interventions), ``OUT/losses.json`` (rank 0) and ``OUT/saves.log`` (the rank of every
checkpoint write).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file

import reftlab

loop_module = importlib.import_module("reftlab.train.loop")  # `reftlab.train` is also the function

WORDS = ["cat", "dog house", "sun", "blue sky", "red", "an owl", "fig", "jam jar"]


def run(out: Path) -> None:
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    tok = reftlab.tiny_tokenizer()
    torch.manual_seed(0)
    hooked = reftlab.load_model(reftlab.tiny_llama(seed=0), tok)
    rep = {"layer": 1, "component": "block_output", "intervention": {"kind": "loreft", "rank": 2}}
    reft_model = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[rep]))
    frame = pd.DataFrame({"prompt": [f"Say {w} now:" for w in WORDS], "response": WORDS})
    dataset = reftlab.build_dataset(frame, tok, positions="l1")

    crash = os.environ.get("CRASH_AT")

    def on_step(step: int, loss: float) -> None:
        if crash and crash == f"{rank}:{step}":
            raise RuntimeError(f"injected crash on rank {rank} after step {step}")

    save = loop_module.save_checkpoint

    def logged_save(*args, **kwargs):
        with open(out / "saves.log", "a") as f:
            f.write(f"{rank}\n")
        return save(*args, **kwargs)

    loop_module.save_checkpoint = logged_save
    try:
        result = reftlab.train(
            reft_model,
            dataset,
            epochs=3,
            batch_size=2 // world,
            grad_accum=2,
            lr=5e-2,
            warmup_steps=1,
            seed=3,
            checkpoint_every=2,
            checkpoint_dir=str(out / "ckpt"),
            keep_checkpoints=0,
            log_every=1,
            resume_from=str(out / "ckpt") if os.environ.get("RESUME") else None,
            on_step=on_step,
        )
    finally:
        loop_module.save_checkpoint = save
    state = {k: v.contiguous() for k, v in next(iter(reft_model.interventions.values())).state_dict().items()}
    save_file(state, str(out / f"rank{rank}.safetensors"))
    if rank == 0:
        (out / "losses.json").write_text(json.dumps({"world": result.world_size, "losses": result.losses}))


if __name__ == "__main__":
    run(Path(sys.argv[1]))
