"""Training step time of the seed walkthrough recipe through four trainers, interleaved step by step.

The recipe: four rank-4 LoReFTs on the residual stream (block_output) at layers 6/12/18/24 of the
embedded SmolLM2-135M-Instruct (float32), the last prompt token (``l1``), the ten examples of
``examples/emoji.jsonl`` rendered with the model's chat template, batch 10 (one step per epoch),
AdamW at lr 4e-3 with linear decay, ``--epochs`` epochs (the walkthrough's 100 by default).

(a) pyreft:   pyreft 0.1.0's own ``ReftTrainerForCausalLM`` on transformers 4.45.1, in its own venv
              (``--pyreft-python``; built as ``tests/fixtures/pyreft/make_fixtures.sh`` builds it),
              driven over a pipe by ``benchmarks/_pyreft_arm.py``;
(b) trainer:  reftlab's ``ReftTrainerForCausalLM`` through ``import reftlab as pyreft`` (the same
              script as (a)); it takes the fast path with a content-keyed cache;
(c) train:    ``reftlab.train`` (fast path: cached blocks, packed rows, reused prefix, sparse logits);
(d) naive:    the padded batch through the whole model with the interventions hooked, full-vocabulary
              logits, HF's loss, backward, AdamW (the work pyreft's step does, on transformers 5).

All four start from pyreft's own initial interventions ((a) saves them in pyreft's format; reftlab's
pyreft reader loads them) and see the same token ids (asserted). They take turns step by step (a,
b, c, d, a, ...): only one computes at a time, so machine noise hits all alike. A step is timed
from the trainer's step start to its end (forward, backward, clipping, optimizer and scheduler).
The first step of each is cold (it builds (b)'s and (c)'s caches) and is left out of the medians.

Asserted: the step-1 losses of all four agree (same weights, same data; (a) runs other code on
another transformers); (b), (c) and (d) agree at every step (the fast path is exact and their
optimizers are the same). Reported: the final losses after the same epochs ((a) against (b),
+-10%; the reftlab arms use reftlab's own map of R, ``orthogonal="qr"``, whose steps differ from pyreft's
orthogonal parametrization, so they drift apart; ``benchmarks/pyreft_parity.py`` compares the learning).
The last line is JSON.

    python benchmarks/train_speed.py [--epochs 100] [--threads 2] [--pyreft-python /work/pyreft-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainingArguments

import reftlab
import reftlab as pyreft  # arm (b) runs pyreft's script against reftlab
from reftlab.data.encode import format_prompt
from reftlab.train.loop import lr_factor
from reftlab.train.loss import batch_positions

HERE = Path(__file__).resolve().parent
ARMS = ("pyreft", "trainer", "train", "naive")


class Turns:
    """Round-robin turns between threads: ``wait(name)`` blocks until it is ``name``'s turn,
    ``done(name)`` passes it on, ``leave(name)`` drops out; an error in one arm stops all."""

    def __init__(self, names: list[str]) -> None:
        self.active, self.current, self.error = list(names), names[0], None
        self.cv = threading.Condition()

    def wait(self, name: str) -> None:
        with self.cv:
            self.cv.wait_for(lambda: self.current == name or self.error is not None)
            if self.error is not None:
                raise RuntimeError(f"another arm failed: {self.error}")

    def done(self, name: str) -> None:
        with self.cv:
            if os.environ.get("TURNS_DEBUG"):
                print(f"[turns] {name} done at {time.strftime('%X')}", file=sys.stderr, flush=True)
            self.current = self.active[(self.active.index(name) + 1) % len(self.active)]
            self.cv.notify_all()

    def leave(self, name: str, error: BaseException | None = None) -> None:
        with self.cv:
            k = self.active.index(name)
            self.active.remove(name)
            if error is not None:
                self.error = repr(error)
            if self.current == name and self.active:
                self.current = self.active[k % len(self.active)]
            self.cv.notify_all()


class Record:
    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.losses: list[float] = []


def run_arm(name: str, turns: Turns, body: Callable[[], None]) -> threading.Thread:
    def target() -> None:
        try:
            body()
        except BaseException as e:
            turns.leave(name, e)
            raise
        turns.leave(name)

    thread = threading.Thread(target=target, name=name)
    thread.start()
    return thread


class StepTurns(TrainerCallback):
    """HF Trainer callback: a step waits for its turn, is timed, and passes the turn on."""

    def __init__(self, name: str, turns: Turns, record: Record, losses: list[float]) -> None:
        self.name, self.turns, self.record, self.losses, self.t0 = name, turns, record, losses, 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self.turns.wait(self.name)
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.record.seconds.append(time.perf_counter() - self.t0)
        self.record.losses.append(self.losses[-1])
        self.turns.done(self.name)


class RecordingTrainer(pyreft.ReftTrainerForCausalLM):
    def compute_loss(self, *args, **kwargs):
        loss = super().compute_loss(*args, **kwargs)
        self.recorded.append(float(loss.item()))
        return loss


def read_line(proc: subprocess.Popen) -> dict:
    line = proc.stdout.readline() if proc.stdout is not None else ""
    if not line:
        raise RuntimeError(f"the pyreft arm stopped (exit code {proc.poll()}); its stderr is above")
    return json.loads(line)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2, help="torch threads, fixed for every arm")
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--pyreft-python", default="/work/pyreft-venv/bin/python")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.epochs < 6:
        raise SystemExit("--epochs must be >= 6: medians need >= 5 warm steps")
    if not Path(args.pyreft_python).is_file():
        raise SystemExit(
            f"no pyreft venv at {args.pyreft_python}: build it with tests/fixtures/pyreft/make_fixtures.sh"
        )
    torch.set_num_threads(args.threads)
    layers, rank = [6, 12, 18, 24], 4
    load_before = os.getloadavg()

    hooked = reftlab.load_model()
    tok = hooked.tokenizer
    tok.padding_side = "right"
    rows = [json.loads(line) for line in (HERE.parent / "examples" / "emoji.jsonl").read_text().splitlines() if line]
    prompts = [format_prompt(tok, r["prompt"], True) for r in rows]
    responses = [r["response"] for r in rows]

    tmp = Path(tempfile.mkdtemp(prefix="train-speed-"))
    job = {
        "model": str(reftlab.embedded_model_path()),
        "prompts": prompts,
        "responses": responses,
        "layers": layers,
        "rank": rank,
        "lr": args.lr,
        "epochs": args.epochs,
        "threads": args.threads,
        "seed": args.seed,
        "init_dir": str(tmp / "init"),
    }
    proc = subprocess.Popen(
        [args.pyreft_python, str(HERE / "_pyreft_arm.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(job) + "\n")
    proc.stdin.flush()
    ready = read_line(proc)

    # (b), (c), (d): the pyreft script's ReFT on reftlab, from pyreft's initial weights.
    init = reftlab.ReftModel.load(tmp / "init", hooked)
    init_by_layer = {s.layer: iv for s, iv in zip(init.sites, init.interventions.values())}

    def config() -> pyreft.ReftConfig:  # one per arm: like pyreft's, a config's intervention objects are used as given
        return pyreft.ReftConfig(
            representations=[
                {
                    "layer": layer,
                    "component": "block_output",
                    "low_rank_dimension": rank,
                    # reftlab's own map of R: the arms load R, W, b from pyreft's saved file, which holds no
                    # parametrization state (benchmarks/pyreft_parity.py compares the maps' learning)
                    "intervention": pyreft.LoreftIntervention(
                        embed_dim=hooked.d_model, low_rank_dimension=rank, orthogonal="qr"
                    ),
                }
                for layer in layers
            ]
        )

    models = {}
    for arm in ARMS[1:]:
        rm = pyreft.get_reft_model(hooked, config())
        for site, iv in zip(rm.sites, rm.interventions.values()):
            iv.load_state_dict(init_by_layer[site.layer].state_dict())
        models[arm] = rm
    dm = pyreft.make_last_position_supervised_data_module(tok, hooked.model, prompts, responses, len(layers))
    assert len({id(iv) for rm in models.values() for iv in rm.interventions.values()}) == 3 * len(layers)
    examples = [dm["train_dataset"][i] for i in range(len(rows))]
    ours = [list(map(int, e["input_ids"])) for e in examples]
    assert ours == ready["input_ids"], "pyreft and reftlab tokenized the data differently"
    assert [e["intervention_locations"][0][0] for e in examples] == ready["locations"]
    full = dm["data_collator"](examples)

    turns = Turns(list(ARMS))
    records = {arm: Record() for arm in ARMS}

    def arm_pyreft() -> None:
        for _ in range(args.epochs):
            turns.wait("pyreft")
            proc.stdin.write("go\n")
            proc.stdin.flush()
            step = read_line(proc)
            records["pyreft"].seconds.append(step["seconds"])
            records["pyreft"].losses.append(step["loss"])
            turns.done("pyreft")
        proc.wait(timeout=120)

    def hf_args(arm: str) -> TrainingArguments:
        return TrainingArguments(
            output_dir=str(tmp / arm),
            num_train_epochs=args.epochs,
            per_device_train_batch_size=len(rows),
            learning_rate=args.lr,
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
            seed=args.seed,
        )

    def arm_trainer() -> None:
        trainer = RecordingTrainer(model=models["trainer"], tokenizer=tok, args=hf_args("trainer"), **dm)
        trainer.recorded = []
        trainer.add_callback(StepTurns("trainer", turns, records["trainer"], trainer.recorded))
        trainer.train()
        assert trainer.fast_path is not None, "reftlab's ReftTrainerForCausalLM did not take the fast path"

    def arm_train() -> None:
        rec, clock = records["train"], {"t0": 0.0, "first": True}

        def collate(batch):
            if not clock["first"]:
                turns.wait("train")
                clock["t0"] = time.perf_counter()
            clock["first"] = False
            return dm["data_collator"](batch)

        def on_step(step: int, loss: float) -> None:
            rec.seconds.append(time.perf_counter() - clock["t0"])
            rec.losses.append(loss)
            turns.done("train")

        turns.wait("train")  # the first turn covers setup and the cache warm-up
        clock["t0"] = time.perf_counter()
        result = reftlab.train(
            models["train"],
            dm["train_dataset"],
            epochs=args.epochs,
            batch_size=len(rows),
            lr=args.lr,
            seed=args.seed,
            collator=collate,
            on_step=on_step,
            progress=False,
            log_every=0,
        )
        assert result.fast, "reftlab.train did not take the fast path"

    def arm_naive() -> None:
        rm = models["naive"]
        params = list(rm.interventions.parameters())
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.epochs, 0, "linear"))
        positions = batch_positions(full, len(layers))
        rm.interventions.train()
        for _ in range(args.epochs):
            turns.wait("naive")
            t0 = time.perf_counter()
            loss = rm.run(full["input_ids"], full["attention_mask"], positions=positions, labels=full["labels"]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            records["naive"].seconds.append(time.perf_counter() - t0)
            records["naive"].losses.append(loss.item())
            turns.done("naive")

    bodies = {"pyreft": arm_pyreft, "trainer": arm_trainer, "train": arm_train, "naive": arm_naive}
    threads = [run_arm(arm, turns, bodies[arm]) for arm in ARMS]
    for t in threads:
        t.join()
    if turns.error is not None:
        raise SystemExit(f"an arm failed: {turns.error}")
    load_after = os.getloadavg()
    report(args, records, load_before, load_after, int(full["attention_mask"].sum()))


def report(args, records, load_before, load_after, n_tokens) -> None:
    for arm in ARMS:
        assert len(records[arm].losses) == args.epochs, f"{arm}: {len(records[arm].losses)} steps"
    first = {arm: records[arm].losses[0] for arm in ARMS}
    for arm in ARMS[1:]:  # same weights, same data: the same first loss (transformers 4.45 vs 5: to rounding)
        assert abs(first[arm] - first["pyreft"]) <= 1e-4 * max(1.0, first["pyreft"]), (arm, first)
    for arm in ("train", "naive"):  # reftlab's three trainers take the same steps
        gaps = [abs(a - b) for a, b in zip(records[arm].losses, records["trainer"].losses)]
        assert max(gaps) <= 1e-3, f"{arm} drifted from the trainer's losses by up to {max(gaps):.2e}"
    med = {arm: statistics.median(records[arm].seconds[1:]) for arm in ARMS}
    final = {arm: records[arm].losses[-1] for arm in ARMS}
    print(
        f"\nSmolLM2-135M fp32, {torch.get_num_threads()} torch threads, batch 10 ({n_tokens} tokens), "
        f"{args.epochs} epochs, load average before {load_before[0]:.2f} / after {load_after[0]:.2f}"
    )
    print(f"{'arm':<34}{'median step (s)':>16}{'vs pyreft':>11}{'first step (s)':>16}{'final loss':>12}")
    names = {
        "pyreft": "(a) pyreft 0.1.0 ReftTrainer",
        "trainer": "(b) reftlab ReftTrainerForCausalLM",
        "train": "(c) reftlab.train",
        "naive": "(d) naive step (transformers 5)",
    }
    for arm in ARMS:
        print(
            f"{names[arm]:<34}{med[arm]:>16.3f}{med[arm] / med['pyreft']:>10.2f}x"
            f"{records[arm].seconds[0]:>16.2f}{final[arm]:>12.4f}"
        )
    ratio = final["trainer"] / final["pyreft"]
    print(f"final loss (b)/(a) = {ratio:.3f} ({'within' if abs(ratio - 1) <= 0.1 else 'outside'} +-10%)")
    print(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "epochs": args.epochs,
                "median_step_s": {k: round(v, 4) for k, v in med.items()},
                "ratio_vs_pyreft": {k: round(v / med["pyreft"], 4) for k, v in med.items()},
                "first_step_s": {k: round(records[k].seconds[0], 3) for k in ARMS},
                "first_loss": {k: round(v, 6) for k, v in first.items()},
                "final_loss": {k: round(v, 6) for k, v in final.items()},
                "final_loss_ratio_trainer_vs_pyreft": round(ratio, 4),
                "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
