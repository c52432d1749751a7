"""One training run of ``ReftTrainerForCausalLMDistributed``, for ``tests/train/test_distributed.py``.

    torchrun --standalone --nproc-per-node 2 ddp_worker.py OUT     # 2 processes, batch 2 each
    python ddp_worker.py OUT                                       # 1 process, batch 4
    torchrun ... ddp_worker.py OUT true 2      # fast=True, 2 micro-batches per step (batch 1 each)

Every example has the same prompt and response lengths, so the mean of the two
processes' losses is the loss of their union: both runs see the same global batches
and should end with the same weights. Writes ``OUT/rank{r}.safetensors`` (final
interventions), ``OUT/losses.json`` (rank 0) and ``OUT/saves.log`` (one line per
``ReftModel.save`` call: the rank that wrote). ``losses.json`` also holds how many losses each
path computed on rank 0 (``fast_steps``, ``plain_steps``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import TrainingArguments

import reftlab

WORDS = ["cat", "dog", "sun", "sky", "red", "owl", "fig", "jam"]


def run(out: Path, fast: bool | None = None, grad_accum: int = 1) -> None:
    # One thread, as each torchrun / accelerate rank has: BLAS rounding depends on the thread count, and
    # pyreft's LoreftIntervention draws a d x d orthogonal base (a QR) whose last bits would otherwise
    # differ between the 2-process and the in-process run before the first step.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(out, fast, grad_accum)
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, fast: bool | None, grad_accum: int) -> None:
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    tok = reftlab.tiny_tokenizer()
    torch.manual_seed(0)
    hooked = reftlab.load_model(reftlab.tiny_llama(seed=0), tok)
    rep = {"layer": 1, "component": "block_output", "intervention": reftlab.LoreftIntervention(embed_dim=64, low_rank_dimension=2)}  # fmt: skip
    reft_model = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=rep))
    dm = reftlab.make_last_position_supervised_data_module(tok, None, [f"Say {w}:" for w in WORDS], WORDS)

    save = reftlab.ReftModel.save

    def logged_save(self, *args, **kwargs):
        with open(out / "saves.log", "a") as f:
            f.write(f"{rank}\n")
        return save(self, *args, **kwargs)

    args = TrainingArguments(
        output_dir=str(out / "run"),
        num_train_epochs=2,
        per_device_train_batch_size=4 // world // grad_accum,
        gradient_accumulation_steps=grad_accum,
        learning_rate=5e-2,
        logging_steps=1,
        save_strategy="steps",
        save_steps=2,
        report_to=[],
        use_cpu=True,
        ddp_backend="gloo" if world > 1 else None,
        seed=3,
    )
    trainer = reftlab.ReftTrainerForCausalLMDistributed(model=reft_model, tokenizer=tok, args=args, fast=fast, **dm)
    reftlab.ReftModel.save = logged_save  # type: ignore[method-assign]
    try:
        trainer.train()
        trainer.save_model(str(out / "final"))
    finally:
        reftlab.ReftModel.save = save  # type: ignore[method-assign]
    state = {k: v.contiguous() for k, v in next(iter(reft_model.interventions.values())).state_dict().items()}
    save_file(state, str(out / f"rank{rank}.safetensors"))
    if rank == 0:
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        paths = {"fast_steps": trainer.fast_steps, "plain_steps": trainer.plain_steps}
        (out / "losses.json").write_text(json.dumps({"world": world, "losses": losses, **paths}))


if __name__ == "__main__":
    fast = {"true": True, "false": False, "none": None}[sys.argv[2] if len(sys.argv) > 2 else "none"]
    run(Path(sys.argv[1]), fast, int(sys.argv[3]) if len(sys.argv) > 3 else 1)
