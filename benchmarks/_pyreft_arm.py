"""pyreft 0.1.0's own ReftTrainerForCausalLM, one step per turn: run by ``train_speed.py`` in pyreft's venv.

pyreft pins transformers 4.45.1 (reftlab needs 5), so this script runs in a separate venv
(build it as ``tests/fixtures/pyreft/make_fixtures.sh`` does, e.g. at /work/pyreft-venv) and
talks to ``train_speed.py`` over stdin/stdout, one JSON line each way:

    <- {"model": folder, "prompts": [...], "responses": [...], "layers": [...], "rank": r,
        "lr": lr, "epochs": n, "threads": t, "seed": s, "init_dir": folder}
    -> {"ready": true, "input_ids": [[...], ...], "locations": [...]}
       (after saving its initial interventions to init_dir in pyreft's format)
    then per training step: <- "go"   -> {"step": i, "seconds": s, "loss": l}

The prompts arrive already rendered with the chat template, so both sides tokenize the same
strings. It imports only pyreft, transformers 4.45 and torch, never reftlab.
"""

import json
import sys
import time

# The protocol owns stdout; pyvene and transformers print progress, so they get stderr.
PROTOCOL, sys.stdout = sys.stdout, sys.stderr

import pyreft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback  # noqa: E402


def say(message: dict) -> None:
    print(json.dumps(message), file=PROTOCOL, flush=True)


def load(folder: str) -> LlamaForCausalLM:
    # A folder written by transformers 5 keeps rope_theta under rope_parameters, which 4.45 does not read.
    with open(f"{folder}/config.json") as f:
        cfg = json.load(f)
    cfg["rope_theta"] = cfg.get("rope_parameters", {}).get("rope_theta", cfg.get("rope_theta", 10000.0))
    cfg.pop("rope_parameters", None)
    cfg.pop("dtype", None)
    config = LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version")})
    return LlamaForCausalLM.from_pretrained(folder, config=config, torch_dtype=torch.float32).eval()


class Turns(TrainerCallback):
    """Waits for "go" before each step and reports its time and loss after it."""

    def __init__(self, trainer_losses: list) -> None:
        self.losses, self.t0, self.step = trainer_losses, 0.0, 0

    def on_step_begin(self, args, state, control, **kwargs):
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("train_speed.py stopped sending turns")
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self.t0
        self.step += 1
        say({"step": self.step, "seconds": seconds, "loss": self.losses[-1]})


class RecordingTrainer(pyreft.ReftTrainerForCausalLM):
    def compute_loss(self, *args, **kwargs):
        loss = super().compute_loss(*args, **kwargs)
        self.recorded.append(float(loss.item()))
        return loss


def main() -> None:
    job = json.loads(sys.stdin.readline())
    torch.set_num_threads(job["threads"])
    transformers.logging.set_verbosity_error()
    model = load(job["model"])
    # transformers 5 names the tokenizer class "TokenizersBackend"; 4.45 reads the same files as a fast tokenizer.
    tok = PreTrainedTokenizerFast.from_pretrained(job["model"], padding_side="right")
    tok.model_max_length = model.config.max_position_embeddings  # pyreft truncates to it; "no limit" overflows
    torch.manual_seed(job["seed"])
    d = model.config.hidden_size
    reps = [
        {
            "layer": layer,
            "component": "block_output",
            "low_rank_dimension": job["rank"],
            "intervention": pyreft.LoreftIntervention(embed_dim=d, low_rank_dimension=job["rank"], dtype=torch.float32),
        }
        for layer in job["layers"]
    ]
    reft_model = pyreft.get_reft_model(model, pyreft.ReftConfig(representations=reps), set_device=False)
    reft_model.save(job["init_dir"])
    dm = pyreft.make_last_position_supervised_data_module(
        tok, model, job["prompts"], job["responses"], num_interventions=len(reps)
    )
    ds = dm["train_dataset"]
    say(
        {
            "ready": True,
            "input_ids": [list(map(int, x)) for x in ds["input_ids"]],
            "locations": [x[0][0] for x in ds["intervention_locations"]],
        }
    )
    args = transformers.TrainingArguments(
        output_dir=job["init_dir"] + "-run",
        num_train_epochs=job["epochs"],
        per_device_train_batch_size=len(job["prompts"]),
        learning_rate=job["lr"],
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=job["seed"],
    )
    trainer = RecordingTrainer(model=reft_model, tokenizer=tok, args=args, **dm)
    trainer.recorded = []
    trainer.add_callback(Turns(trainer.recorded))
    trainer.train()


if __name__ == "__main__":
    main()
