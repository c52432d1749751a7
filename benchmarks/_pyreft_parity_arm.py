"""pyreft 0.1.0 training one of its own scripts, for ``pyreft_parity.py``: run in pyreft's venv.

pyreft pins transformers 4.45.1 (reftlab needs 5), so this runs in a separate venv
(``make pyreft-venv``: ``.venv-pyreft``) and talks to ``pyreft_parity.py`` (or a test) over a pipe:

    <- one JSON line, the job:
       {"script": "walkthrough" | "alpaca", "model": folder, "layers": [...], "rank": r, "lr": lr,
        "epochs": n | "max_steps": n, "batch_size": b, "seed": s, "threads": t, "dtype": "float32" | "bfloat16",
        "init_dir": folder, "heldout": [prompt, ...], "max_new_tokens": n,
        walkthrough: "prompts": [...], "responses": [...] (rendered with the chat template);
        alpaca: "data_path": a JSON file of instruction/input/output records, "position": "f1+l1"}
    -> one JSON line: {"input_ids": [[...]], "locations": [[[...]]], "losses": [...], "answers": [...],
                        "batches": [[example index, ...] per batch, in training order]}

Before training it saves its initial interventions to ``init_dir`` in pyreft's format and, in
``init_dir/parametrization.safetensors``, each LoReFT's whole orthogonal parametrization
(``<i>.original``: the trained d x r Householder reflectors; ``<i>.base``: the d x d orthogonal
buffer torch draws at random when the parametrization is registered; ``<i>.weight``, ``<i>.bias``),
so reftlab can start from the same point in pyreft's parameter space.

Both scripts are pyreft's, with only the model, the data and the step count from the job:
``walkthrough`` is the seed's (``make_last_position_supervised_data_module`` and
``ReftTrainerForCausalLM``); ``alpaca`` is ``examples/alpaca/train.py`` (``ReftSupervisedDataset``,
``DataCollatorForSeq2Seq`` inside ``ReftDataCollator``, the layer list doubled for ``f1+l1``,
``pad_token = unk_token``). Imports only pyreft, transformers 4.45 and torch, never reftlab.
"""

import json
import sys

# The protocol owns stdout; pyvene and transformers print progress, so they get stderr.
PROTOCOL, sys.stdout = sys.stdout, sys.stderr

import pyreft  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402


def load(folder: str, dtype: torch.dtype) -> LlamaForCausalLM:
    # A folder written by transformers 5 keeps rope_theta under rope_parameters, which 4.45 does not read.
    with open(f"{folder}/config.json") as f:
        cfg = json.load(f)
    cfg["rope_theta"] = cfg.get("rope_parameters", {}).get("rope_theta", cfg.get("rope_theta", 10000.0))
    cfg.pop("rope_parameters", None)
    cfg.pop("dtype", None)
    config = LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "transformers_version")})
    return LlamaForCausalLM.from_pretrained(folder, config=config, torch_dtype=dtype).eval()


class RecordingTrainer(pyreft.ReftTrainerForCausalLM):
    def compute_loss(self, *args, **kwargs):
        loss = super().compute_loss(*args, **kwargs)
        self.recorded.append(float(loss.item()))
        return loss


def save_init(reft_model, folder: str) -> None:
    reft_model.save(folder)
    flat = {}
    for i, key in enumerate(reft_model.sorted_keys):
        iv = reft_model.interventions[key]
        iv = iv[0] if isinstance(iv, tuple) else iv  # pyvene < 0.1.8 kept (intervention, hook) pairs
        param = iv.rotate_layer.parametrizations.weight  # config order = pyvene's sorted_keys order
        flat[f"{i}.original"] = param.original.detach().float().contiguous()
        flat[f"{i}.base"] = param[0].base.detach().float().contiguous()
        flat[f"{i}.weight"] = iv.learned_source.weight.detach().float().contiguous()
        flat[f"{i}.bias"] = iv.learned_source.bias.detach().float().contiguous()
    save_file(flat, f"{folder}/parametrization.safetensors")


def main() -> None:
    job = json.loads(sys.stdin.readline())
    torch.set_num_threads(job["threads"])
    transformers.logging.set_verbosity_error()
    dtype = getattr(torch, job["dtype"])
    model = load(job["model"], dtype)
    # transformers 5 names the tokenizer class "TokenizersBackend"; 4.45 reads the same files as a fast tokenizer.
    tok = PreTrainedTokenizerFast.from_pretrained(job["model"], padding_side="right")
    tok.model_max_length = job.get("model_max_length", model.config.max_position_embeddings)
    layers = list(job["layers"])
    if job["script"] == "alpaca":
        tok.pad_token = tok.unk_token  # the script's own line
        if "+" in job["position"]:  # the script doubles the layers when share_weights is off
            layers += layers
    torch.manual_seed(job["seed"])
    d = model.config.hidden_size
    reps = [
        {
            "layer": layer,
            "component": "block_output",
            "low_rank_dimension": job["rank"],
            # float32 interventions need the explicit dtype (pyreft's default is bfloat16).
            "intervention": pyreft.LoreftIntervention(
                embed_dim=d, low_rank_dimension=job["rank"], dtype=getattr(torch, job["intervention_dtype"])
            ),
        }
        for layer in layers
    ]
    reft_model = pyreft.get_reft_model(model, pyreft.ReftConfig(representations=reps), set_device=False)
    save_init(reft_model, job["init_dir"])

    if job["script"] == "walkthrough":
        dm = pyreft.make_last_position_supervised_data_module(
            tok, model, job["prompts"], job["responses"], num_interventions=len(reps)
        )
    else:
        train = pyreft.ReftSupervisedDataset(
            "alpaca",
            job["data_path"],
            tok,
            data_split="train",
            seed=job["seed"],
            input_field="input",
            instruction_field="instruction",
            output_field="output",
            num_interventions=len(layers),
            position=job["position"],
            share_weights=False,
        )
        collator = transformers.DataCollatorForSeq2Seq(
            tokenizer=tok, model=model, label_pad_token_id=-100, padding="longest"
        )
        dm = dict(train_dataset=train, eval_dataset=None, data_collator=pyreft.ReftDataCollator(data_collator=collator))
    ds = dm["train_dataset"]
    examples = [ds[i] for i in range(len(ds))]
    index = {tuple(int(t) for t in e["input_ids"]): i for i, e in enumerate(examples)}
    batches: list[list[int]] = []  # the example indices of every batch, in training order
    collate = dm["data_collator"]

    def recording_collator(instances):
        batches.append([index[tuple(int(t) for t in e["input_ids"])] for e in instances])
        return collate(instances)

    dm["data_collator"] = recording_collator
    steps = {"max_steps": job["max_steps"]} if "max_steps" in job else {"num_train_epochs": job["epochs"]}
    args = transformers.TrainingArguments(
        output_dir=job["init_dir"] + "-run",
        per_device_train_batch_size=job["batch_size"],
        learning_rate=job["lr"],
        optim="adamw_torch",
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=job["seed"],
        remove_unused_columns=False,
        **steps,
    )
    trainer = RecordingTrainer(model=reft_model, tokenizer=tok, args=args, **dm)
    trainer.recorded = []
    trainer.train()
    print(json.dumps({"losses": trainer.recorded}), file=sys.stderr, flush=True)  # kept even if generation fails
    PROTOCOL.write(
        json.dumps(
            {
                "input_ids": [[int(t) for t in e["input_ids"]] for e in examples],
                "locations": [[[int(p) for p in row] for row in e["intervention_locations"]] for e in examples],
                "losses": trainer.recorded,
                "batches": batches,
                "answers": answers(reft_model, tok, job, len(reps)),
            }
        )
        + "\n"
    )
    PROTOCOL.flush()


def answers(reft_model, tok, job, n: int) -> list[str]:
    """Greedy answers to the held-out prompts, the interventions at the position the script trained on."""
    out = []
    reft_model.set_device("cpu")
    for prompt in job["heldout"]:
        ids = tok(prompt, return_tensors="pt", return_token_type_ids=False)  # generate refuses token_type_ids
        length = ids["input_ids"].shape[1]
        if job["script"] == "walkthrough":
            locs = [[[length - 1]]] * n  # the data module's: the last prompt token
        else:  # ReftSupervisedDataset's f1+l1 at inference, without the leading pad: first token, token before last
            half = n // 2
            locs = [[[0]]] * half + [[[length - 2]]] * half
        _, gen = reft_model.generate(
            ids,
            unit_locations={"sources->base": (None, locs)},
            intervene_on_prompt=True,
            max_new_tokens=job["max_new_tokens"],
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )
        out.append(tok.decode(gen[0][length:], skip_special_tokens=True))
    return out


if __name__ == "__main__":
    main()
