"""pyreft's own scripts trained by pyreft 0.1.0 and by reftlab, from the same initial weights, step by step.

Two scripts, each run by pyreft 0.1.0 in its own venv (transformers 4.45.1, driven over a pipe
by ``benchmarks/_pyreft_parity_arm.py``) and by reftlab (the same script with
``import reftlab as pyreft``, transformers 5), on the embedded SmolLM2-135M-Instruct:

- ``walkthrough``: the seed's: four rank-4 LoReFTs on block_output at layers 6/12/18/24, the last
  prompt token (``make_last_position_supervised_data_module``), the ten examples of
  ``examples/emoji.jsonl`` rendered with the chat template, batch 10, lr 8e-3, ``--epochs``
  epochs (100), float32 base and float32 interventions (pyreft: ``dtype=torch.float32``).
  Held out: the four prompts of ``examples/emoji.yaml``, greedy, 32 tokens.
- ``alpaca``: pyreft's ``examples/alpaca/train.py`` (``ReftSupervisedDataset``, ``--layers "6;12"
  --position f1+l1 --rank 2 --learning_rate 4e-3 --per_device_train_batch_size 4``, layers
  doubled, ``pad_token = unk_token``) on twelve Alpaca-format rhyme pairs, ``--alpaca-steps``
  steps (20); once in float32 (base and interventions) and once as the script runs it (bfloat16
  base; pyreft's interventions bfloat16, reftlab's float32 masters). reftlab's arms draw pyreft's
  batches in pyreft's order (transformers 4.45 and 5 shuffle differently from one seed).

reftlab's arms start from pyreft's initial interventions: the whole orthogonal parametrization
(Householder reflectors and the random d x d base torch draws), W and b. They are

- ``port``: the script as ported (``LoreftIntervention``'s default, ``orthogonal="householder"``:
  pyreft's parametrization of R), with pyreft's positions (``pyreft_positions=True``) where they
  differ from reftlab's;
- ``own``: the port with reftlab's own positions (the alpaca script's ``l1``: pyreft's is one
  token early);
- ``qr``: the port with ``orthogonal="qr"`` (reftlab's native map of R), from the same R, W, b;
- ``ulp`` (walkthrough, the control): the port with every entry of W nudged by one float32 ulp,
  for ``--control-steps`` steps. At lr 8e-3 the walkthrough's training is chaotic: a rounding-sized
  difference grows until it decides the curve, and two runs of different code (transformers 4.45
  against 5, eager against packed attention) differ by rounding from the first step.

Printed: every step's loss for each arm and its ratio to pyreft's, the largest relative gap and
the first step over 1e-3, the mean of the last 20 steps, and the held-out answers with their emoji
fraction. Asserted: the data (token ids, positions) is pyreft's, and in float32 the port's curve
is within 1e-3 relative of pyreft's at every step where the ulp control is within 1e-3 of the port
(every step, without a control). The last line is JSON.

    python benchmarks/pyreft_parity.py [--epochs 100] [--alpaca-steps 20] [--threads 1]
        [--pyreft-python .venv-pyreft/bin/python] [--out DIR] [--reuse] [--only walkthrough|alpaca]
        [--arms port,ulp,qr] [--control-steps 40] [--stop-after N]

pyreft trains in its own process while reftlab's arms train (from the initial interventions
pyreft saves first). ``--reuse`` takes a pyreft run already in ``--out`` (its ``pyreft.json``
and ``init/``; a run still writing is waited for) instead of running pyreft again: a 100-epoch
pyreft walkthrough takes ~20 minutes on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
import yaml
from safetensors.torch import load_file
from transformers import TrainingArguments

import reftlab
import reftlab as pyreft  # reftlab's arms run pyreft's scripts
from reftlab.data.encode import format_prompt
from reftlab.interventions.base import householder_rows
from reftlab.metrics import emoji_fraction

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TOLERANCE = 1e-3  # float32: relative gap allowed at every step

RHYMES = [  # (word, a rhyme): twelve to train on, four held out
    ("cat", "hat"), ("sun", "fun"), ("tree", "bee"), ("light", "night"), ("cake", "lake"), ("rain", "train"),
    ("star", "car"), ("boat", "coat"), ("ring", "king"), ("fish", "dish"), ("bear", "chair"), ("moon", "spoon"),
    ("dog", "frog"), ("mouse", "house"), ("bell", "shell"), ("rose", "nose"),
]  # fmt: skip


def alpaca_records(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"instruction": "Give a word that rhymes with the input.", "input": a, "output": b} for a, b in pairs]


class Recording(pyreft.ReftTrainerForCausalLM):
    """Records every step's loss; with ``order`` set, draws pyreft's batches in pyreft's order
    (transformers 4.45 and 5 shuffle differently from the same seed)."""

    order: list[int] | None = None

    def compute_loss(self, *args: Any, **kwargs: Any) -> Any:
        loss = super().compute_loss(*args, **kwargs)
        self.recorded.append(float(loss.item()))
        return loss

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> Any:
        if self.order is None:
            return super()._get_train_sampler(*args, **kwargs)
        return Replay(self.order, len(self.train_dataset))


class Replay(torch.utils.data.Sampler):
    """Yields a recorded sequence of indices, one epoch's worth per iteration."""

    def __init__(self, order: list[int], epoch_size: int) -> None:
        self.order, self.size, self.epoch = order, epoch_size, 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Any:
        part = self.order[self.epoch * self.size : (self.epoch + 1) * self.size]
        self.epoch += 1
        return iter(part)


def start_pyreft(args: argparse.Namespace, job: dict[str, Any], folder: Path) -> Callable[[], dict[str, Any]]:
    """Start pyreft's run (or take one in ``folder`` with ``--reuse``); return once its initial
    interventions are saved, with a function that waits for its result. reftlab's arms train
    meanwhile: on two cores both trainers run at once."""
    result, init = folder / "pyreft.json", folder / "init" / "parametrization.safetensors"

    def wait_for_file() -> dict[str, Any]:  # a run in progress writes pyreft.json when it ends
        while not result.read_text().strip():
            time.sleep(10)
        return json.loads(result.read_text())

    if args.reuse and result.is_file() and init.is_file():
        print(f"[{folder.name}] reusing pyreft's run in {folder}", flush=True)
        return wait_for_file
    folder.mkdir(parents=True, exist_ok=True)
    init.unlink(missing_ok=True)
    job = {**job, "init_dir": str(folder / "init"), "threads": args.threads}
    print(f"[{folder.name}] pyreft 0.1.0 trains ...", flush=True)
    out = result.open("w")
    proc = subprocess.Popen(
        [args.pyreft_python, str(HERE / "_pyreft_parity_arm.py")], stdin=subprocess.PIPE, stdout=out, text=True
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job) + "\n")
    proc.stdin.close()
    while not init.is_file():
        if proc.poll() is not None:
            raise SystemExit(f"the pyreft arm failed (exit code {proc.returncode}); its stderr is above")
        time.sleep(2)
    time.sleep(2)  # the file is written in one call; let it land

    def finish() -> dict[str, Any]:
        code = proc.wait()
        out.close()
        if code != 0:
            raise SystemExit(f"the pyreft arm failed (exit code {code}); its stderr is above")
        return json.loads(result.read_text())

    return finish


class StopAfter(transformers.TrainerCallback):
    """Stop a run after ``steps`` optimizer steps (the lr schedule stays the full run's)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step >= self.steps:
            control.should_training_stop = True
        return control


def start_from(reft_model: Any, init_dir: Path, *, nudge: bool = False) -> None:
    """Load pyreft's initial parametrization into every intervention (config order).

    ``nudge``: move every entry of W by one float32 ulp, the control run: how far a rounding-sized
    difference alone carries a curve (the walkthrough's lr makes training chaotic)."""
    flat = load_file(str(init_dir / "parametrization.safetensors"))
    with torch.no_grad():
        for i, iv in enumerate(reft_model.interventions.values()):
            original, base = flat[f"{i}.original"], flat[f"{i}.base"]
            if iv.orthogonal == "householder":
                iv.reflectors.copy_(original)
                iv.base.copy_(base)
            else:
                iv.rotation.copy_(householder_rows(original, base))
            weight = flat[f"{i}.weight"]
            iv.weight.copy_(torch.nextafter(weight, torch.full_like(weight, torch.inf)) if nudge else weight)
            iv.bias.copy_(flat[f"{i}.bias"])


def train_args(folder: Path, seed: int, batch_size: int, lr: float, steps: dict[str, int]) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(folder),
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        optim="adamw_torch",
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=seed,
        remove_unused_columns=False,
        **steps,
    )


def check_data(name: str, dataset: Any, theirs: dict[str, Any], *, positions: bool) -> None:
    examples = [dataset[i] for i in range(len(dataset))]
    assert [[int(t) for t in e["input_ids"]] for e in examples] == theirs["input_ids"], f"{name}: token ids differ"
    if positions:
        ours = [[[int(p) for p in row] for row in e["intervention_locations"]] for e in examples]
        assert ours == theirs["locations"], f"{name}: positions differ from pyreft's"


def walkthrough(args: argparse.Namespace, hooked: Any, out: Path) -> dict[str, Any]:
    tok = hooked.tokenizer
    tok.padding_side = "right"
    rows = [json.loads(line) for line in (REPO / "examples" / "emoji.jsonl").read_text().splitlines() if line]
    held = yaml.safe_load((REPO / "examples" / "emoji.yaml").read_text())["generation"]["prompts"]
    prompts = [format_prompt(tok, r["prompt"], True) for r in rows]
    responses = [r["response"] for r in rows]
    heldout = [format_prompt(tok, p, True) for p in held]
    layers, rank, lr = [6, 12, 18, 24], 4, 8e-3
    job = dict(
        script="walkthrough",
        model=str(reftlab.embedded_model_path()),
        layers=layers,
        rank=rank,
        lr=lr,
        epochs=args.epochs,
        batch_size=10,
        seed=0,
        dtype="float32",
        intervention_dtype="float32",
        heldout=heldout,
        max_new_tokens=32,
        prompts=prompts,
        responses=responses,
    )
    folder = out / "walkthrough-float32"
    pyreft_result = start_pyreft(args, job, folder)
    curves: dict[str, list[float]] = {}
    answers: dict[str, list[str]] = {}
    datasets = []
    arms = {"port": "householder", "ulp": "householder", "qr": "qr"}
    for arm, orthogonal in ((a, o) for a, o in arms.items() if a in args.arms):
        reps = [
            {
                "layer": layer,
                "component": "block_output",
                "low_rank_dimension": rank,
                "intervention": pyreft.LoreftIntervention(
                    embed_dim=hooked.d_model, low_rank_dimension=rank, orthogonal=orthogonal
                ),
            }
            for layer in layers
        ]
        rm = pyreft.get_reft_model(hooked, pyreft.ReftConfig(representations=reps))
        start_from(rm, folder / "init", nudge=arm == "ulp")
        dm = pyreft.make_last_position_supervised_data_module(tok, hooked.model, prompts, responses, len(layers))
        datasets.append(dm["train_dataset"])
        print(f"[walkthrough] reftlab ({arm}) trains ...", flush=True)
        trainer = Recording(
            model=rm,
            tokenizer=tok,
            args=train_args(folder / arm, 0, 10, lr, {"num_train_epochs": args.epochs}),
            **dm,
        )
        trainer.recorded = []
        stop = args.control_steps if arm == "ulp" else args.stop_after
        if stop:
            trainer.add_callback(StopAfter(stop))
        trainer.train()
        curves[arm] = trainer.recorded
        if arm != "ulp":
            rm.eval()
            answers[arm] = list(reftlab.generate(rm, heldout, positions="l1", max_new_tokens=32).texts)
    theirs = pyreft_result()
    for dataset in datasets:
        check_data("walkthrough", dataset, theirs, positions=True)
    curves, answers = {"pyreft": theirs["losses"], **curves}, {"pyreft": theirs["answers"], **answers}
    return report("walkthrough (float32)", curves, answers, exact=["port"])


def alpaca(args: argparse.Namespace, dtype: str, out: Path) -> dict[str, Any]:
    hooked = reftlab.load_model(dtype=dtype)
    tok = hooked.tokenizer
    tok.padding_side = "right"
    tok.model_max_length = 512
    tok.pad_token = tok.unk_token  # the script's own line
    folder = out / f"alpaca-{dtype}"
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "rhymes.json"
    data.write_text(json.dumps(alpaca_records(RHYMES[:12])))
    layers, rank, lr, batch = [6, 12], 2, 4e-3, 4
    job = dict(
        script="alpaca",
        model=str(reftlab.embedded_model_path()),
        layers=layers,
        rank=rank,
        lr=lr,
        max_steps=args.alpaca_steps,
        batch_size=batch,
        seed=42,
        dtype=dtype,
        intervention_dtype="float32" if dtype == "float32" else "bfloat16",  # bf16: the script as is
        heldout=[],
        max_new_tokens=8,
        data_path=str(data),
        position="f1+l1",
        model_max_length=512,
    )
    theirs = start_pyreft(args, job, folder)()  # its batch order first: reftlab's arms replay it
    curves: dict[str, list[float]] = {"pyreft": theirs["losses"]}
    layers = layers + layers  # the script doubles them for f1+l1 without share_weights
    for arm, pyreft_positions in (("port", True), ("own", False)):
        reps = [
            {
                "layer": layer,
                "component": "block_output",
                "low_rank_dimension": rank,
                "intervention": pyreft.LoreftIntervention(embed_dim=hooked.d_model, low_rank_dimension=rank),
            }
            for layer in layers
        ]
        rm = pyreft.get_reft_model(hooked, pyreft.ReftConfig(representations=reps))
        start_from(rm, folder / "init")
        train = pyreft.ReftSupervisedDataset(
            "alpaca",
            str(data),
            tok,
            data_split="train",
            seed=42,
            input_field="input",
            instruction_field="instruction",
            output_field="output",
            num_interventions=len(layers),
            position="f1+l1",
            share_weights=False,
            pyreft_positions=pyreft_positions,
        )
        check_data(f"alpaca-{dtype}", train, theirs, positions=pyreft_positions)
        collator = transformers.DataCollatorForSeq2Seq(
            tokenizer=tok, model=hooked.model, label_pad_token_id=-100, padding="longest"
        )
        dm = {
            "train_dataset": train,
            "eval_dataset": None,
            "data_collator": pyreft.ReftDataCollator(data_collator=collator),
        }
        print(f"[alpaca-{dtype}] reftlab ({arm}) trains ...", flush=True)
        trainer = Recording(
            model=rm,
            tokenizer=tok,
            args=train_args(folder / arm, 42, batch, lr, {"max_steps": args.alpaca_steps}),
            **dm,
        )
        trainer.recorded = []
        trainer.order = [i for batch in theirs["batches"] for i in batch]
        trainer.train()
        curves[arm] = trainer.recorded
    return report(f"alpaca ({dtype} base)", curves, {}, exact=["port"] if dtype == "float32" else [])


def report(title: str, curves: dict[str, list[float]], answers: dict[str, list[str]], exact: list[str]) -> dict:
    """Print the curves side by side; check ``exact`` arms against pyreft's.

    With a ``ulp`` control (the port from W nudged by one ulp), an exact arm must stay within
    TOLERANCE of pyreft at every step where the control stays within TOLERANCE of the port:
    where rounding alone cannot move the loss that far, pyreft and reftlab must agree. Without
    one, at every step."""
    ref = curves["pyreft"]
    arms = [a for a in curves if a != "pyreft"]
    print(f"\n{title}: loss per step, and each reftlab arm's ratio to pyreft's")
    print(f"{'step':>5}{'pyreft':>10}" + "".join(f"{a:>10}{'ratio':>8}" for a in arms))
    for i, theirs in enumerate(ref):
        cells = "".join(
            f"{curves[a][i]:>10.4f}{curves[a][i] / theirs:>8.4f}" if i < len(curves[a]) else " " * 18 for a in arms
        )
        print(f"{i + 1:>5}{theirs:>10.4f}{cells}")
    summary: dict[str, Any] = {"title": title, "steps": len(ref), "mean_last_20": {}, "max_rel_gap": {}, "final": {}}
    for arm in ["pyreft", *arms]:
        if len(curves[arm]) < len(ref):  # the control, or a run stopped early (--stop-after)
            continue
        tail = curves[arm][-20:]
        summary["mean_last_20"][arm] = round(sum(tail) / len(tail), 5)
        summary["final"][arm] = round(curves[arm][-1], 5)
    for arm in arms:
        rel = [abs(a / b - 1) for a, b in zip(curves[arm], ref)]
        summary["max_rel_gap"][arm] = max(rel)
        first = next((i + 1 for i, g in enumerate(rel) if g > TOLERANCE), None)
        summary.setdefault("first_step_over_tolerance", {})[arm] = first
        if arm == "ulp":
            print(f"ulp (control, {len(rel)} steps): first step over {TOLERANCE:g} from pyreft: {first}")
            continue
        last = summary["mean_last_20"].get(arm)
        print(
            f"{arm}: largest relative gap to pyreft {summary['max_rel_gap'][arm]:.2e}, first step over {TOLERANCE:g}: "
            f"{first}"
            + (
                f"; mean of the last 20 steps {last:.4f} (pyreft {summary['mean_last_20']['pyreft']:.4f})"
                if last
                else ""
            )
        )
    if "ulp" in curves and "port" in curves:
        rel = [abs(a / b - 1) for a, b in zip(curves["ulp"], curves["port"])]
        stable = next((i for i, g in enumerate(rel) if g > TOLERANCE), len(rel))
        summary["control_stable_steps"] = stable
        print(
            f"control: the port and its one-ulp nudge agree within {TOLERANCE:g} for {stable} steps "
            f"(largest gap over {len(rel)} steps {max(rel):.2e}): beyond that, rounding alone decides the curve"
        )
    if answers:
        print("held-out answers (emoji fraction):")
        for arm, texts in answers.items():
            fractions = [emoji_fraction(t) for t in texts]
            summary.setdefault("emoji_fraction", {})[arm] = round(sum(fractions) / len(fractions), 3)
            print(f"  {arm}: mean emoji fraction {summary['emoji_fraction'][arm]:.2f}")
            for t, f in zip(texts, fractions):
                print(f"    {f:.2f}  {t.strip()[:70]!r}")
    for arm in exact:
        if arm not in curves:
            continue
        checked = summary.get("control_stable_steps", len(ref))
        gap = max(abs(a / b - 1) for a, b in zip(curves[arm][:checked], ref[:checked]))
        assert gap <= TOLERANCE, f"{title}: {arm} left pyreft's curve by {gap:.2e} > {TOLERANCE:g} in {checked} steps"
        print(f"{arm}: within {TOLERANCE:g} of pyreft at each of the {checked} steps checked (largest gap {gap:.2e})")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--alpaca-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pyreft-python", default=str(REPO / ".venv-pyreft" / "bin" / "python"))
    ap.add_argument("--out", default=None, help="folder for pyreft's runs (default: a new temporary one)")
    ap.add_argument("--reuse", action="store_true", help="reuse pyreft runs already in --out")
    ap.add_argument("--only", choices=["walkthrough", "alpaca"], default=None)
    ap.add_argument("--arms", default="port,ulp,qr", help="walkthrough arms to run (comma-separated)")
    ap.add_argument("--control-steps", type=int, default=40, help="steps of the walkthrough's ulp control (0: all)")
    ap.add_argument("--stop-after", type=int, default=0, help="stop every walkthrough arm after N steps (0: all)")
    args = ap.parse_args()
    args.arms = args.arms.split(",")
    if not Path(args.pyreft_python).is_file():
        raise SystemExit(f"no pyreft venv at {args.pyreft_python}: build it with `make pyreft-venv`")
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pyreft-parity-"))
    summaries = []
    if args.only in (None, "walkthrough"):
        summaries.append(walkthrough(args, reftlab.load_model(), out))
    if args.only in (None, "alpaca"):
        summaries.append(alpaca(args, "float32", out))
        summaries.append(alpaca(args, "bfloat16", out))
    print(json.dumps(summaries))


if __name__ == "__main__":
    sys.exit(main())
