"""pyreft's ``examples/reward/train.py`` pattern, with ``from reftlab import ...`` as its one change.

The script's own ``ReftTrainerForRewardModelling`` (a pyreft-style ``compute_loss`` that
calls the model with ``unit_locations``), ``ReftRewardDataset(data_path, "all", ...)``
with its rating fields, ``ReftRewardCollator``, the unfrozen ``score`` head and
``reft_model.save(...)`` run as written; the pyvene lines that register Gemma are the
part that is dropped (reftlab needs no registration). The data is a local dataset
folder laid out like the Hub's ``llm-blender/Unified-Feedback`` (config ``all``, splits
``train`` and ``val``), read through ``datasets.load_dataset`` offline.
"""

import json
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import transformers

from reftlab import (
    FingerprintMismatch,
    LoreftIntervention,
    ReftConfig,
    ReftModel,
    ReftRewardCollator,
    ReftRewardDataset,
    ReftTrainer,
    get_reft_model,
)

device = "cpu"
WORDS = ["hello", "sun", "tea", "dog", "rain", "book", "song", "milk"]


class ReftTrainerForRewardModelling(ReftTrainer):
    def compute_loss(self, intervenable, inputs, return_outputs=False):
        rewards = intervenable(
            {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]},
            unit_locations={"sources->base": (None, inputs["intervention_locations"].permute(1, 0, 2).tolist())},
            subspaces=None,
        )
        chosen_mask = torch.arange(inputs["input_ids"].shape[0]) % 2 == 0
        rejected_mask = ~chosen_mask
        rewards_chosen = rewards[-1].logits[chosen_mask]
        rewards_rejected = rewards[-1].logits[rejected_mask]
        loss = -torch.nn.functional.logsigmoid(rewards_chosen - rewards_rejected).mean()
        if return_outputs:
            return loss, {"rewards_chosen": rewards_chosen, "rewards_rejected": rewards_rejected}
        return loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        loss, reward = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach().cpu()
        logits = (reward["rewards_chosen"] - reward["rewards_rejected"]).detach().cpu()
        labels = torch.ones_like(logits)
        return (loss, logits, labels)


def compute_metrics(eval_pred):
    diffs = eval_pred.predictions.reshape(-1)
    return {"accuracy": np.sum(diffs > 0.0) / len(diffs)}


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default="google/gemma-2b-it")


@dataclass
class DataArguments:
    data_path: str = field(default="llm-blender/Unified-Feedback")


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    cache_dir: str | None = field(default=None)
    optim: str = field(default="adamw_torch")
    model_max_length: int = field(default=512)
    layers: str = field(default="all")
    position: str = field(default="f1+l1")
    share_weights: bool = field(default=False)
    remove_unused_columns: bool = field(default=False)
    rank: int = field(default=1)
    max_n_train_example: int = field(default=None)
    max_n_eval_example: int = field(default=None)
    logging_steps: int = field(default=10)


def make_supervised_data_module(tokenizer, model, layers, training_args, data_args):
    fields = {
        "conv_A_field": "conv_A",
        "conv_B_field": "conv_B",
        "conv_A_reward_field": "conv_A_rating",
        "conv_B_reward_field": "conv_B_rating",
    }
    options = {
        "num_interventions": len(layers),
        "position": training_args.position,
        "share_weights": training_args.share_weights,
    }
    train_dataset = ReftRewardDataset(
        data_args.data_path,
        "all",
        tokenizer,
        data_split="train",
        seed=training_args.seed,
        max_n_example=training_args.max_n_train_example,
        **options,
        **fields,
    )
    eval_dataset = ReftRewardDataset(
        data_args.data_path,
        "all",
        tokenizer,
        data_split="val",
        seed=training_args.seed,
        max_n_example=training_args.max_n_eval_example,
        **options,
        **fields,
    )
    data_collator = ReftRewardCollator(tokenizer=tokenizer, padding=True, max_length=tokenizer.model_max_length)
    return dict(train_dataset=train_dataset, eval_dataset=eval_dataset, data_collator=data_collator)


def run_script(argv):
    parser = transformers.HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    assert training_args.per_device_train_batch_size % 2 == 0, "Batch size must be even."
    layers = [int(x) for x in training_args.layers.split(";")]
    if "+" in training_args.position and not training_args.share_weights:
        layers += layers
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        model_max_length=training_args.model_max_length,
        padding_side="right",
        use_fast=False,
    )
    tokenizer.pad_token = tokenizer.unk_token
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path, num_labels=1, dtype=torch.float32, device_map=device
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    representations = [
        {
            "layer": layer,
            "component": "block_output",
            "low_rank_dimension": training_args.rank,
            "intervention": LoreftIntervention(
                embed_dim=model.config.hidden_size, low_rank_dimension=training_args.rank
            ),
        }
        for layer in layers
    ]
    reft_model = get_reft_model(model, ReftConfig(representations=representations))
    for param in reft_model.model.score.parameters():
        param.requires_grad = True
    reft_model.print_trainable_parameters()
    data_module = make_supervised_data_module(
        tokenizer=tokenizer, model=reft_model, layers=layers, training_args=training_args, data_args=data_args
    )
    trainer = ReftTrainerForRewardModelling(
        model=reft_model, tokenizer=tokenizer, args=training_args, compute_metrics=compute_metrics, **data_module
    )
    before = trainer.evaluate()
    trainer.train()
    trainer.model.model.eval()
    for _, v in trainer.model.interventions.items():
        _ = v[0].eval()
    trainer.save_state()
    reft_model.save(save_directory=os.path.join(training_args.output_dir, "reward_model"))
    after = trainer.evaluate()
    return tokenizer, reft_model, data_module, before, after


def write_unified_feedback(folder):
    """A dataset folder with the Hub repo's shape: config ``all``, splits ``train``/``val``."""
    rows = []
    for i, word in enumerate(WORDS):
        good = [{"role": "user", "content": word}, {"role": "assistant", "content": f"I like {word}."}]
        bad = [{"role": "user", "content": word}, {"role": "assistant", "content": "No."}]
        # conv_A is the better one in half of the rows: the ratings decide which is chosen
        a, b, ra, rb = (good, bad, 9.0, 2.0) if i % 2 == 0 else (bad, good, 1.0, 8.0)
        rows.append({"conv_A": a, "conv_B": b, "conv_A_rating": ra, "conv_B_rating": rb})
    (folder / "all").mkdir(parents=True)
    for split, part in (("train", rows), ("val", rows[:4])):
        (folder / "all" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: all\n  data_files:\n  - split: train\n    path: all/train.jsonl\n"
        "  - split: val\n    path: all/val.jsonl\n---\n"
    )


def test_reward_script_trains_head_and_interventions_and_reloads_both(pretrained, tmp_path, offline_datasets):
    torch.manual_seed(0)
    data = tmp_path / "unified_feedback"
    write_unified_feedback(data)
    out = tmp_path / "out"
    argv = [
        *("--model_name_or_path", str(pretrained), "--data_path", str(data), "--output_dir", str(out)),
        *("--layers", "2", "--rank", "2", "--position", "f1+l1", "--num_train_epochs", "4"),
        *("--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--learning_rate", "5e-2"),
        *("--save_strategy", "no", "--logging_steps", "1", "--report_to", "none", "--use_cpu"),
    ]
    tokenizer, reft_model, data_module, before, after = run_script(argv)
    assert after["eval_loss"] < before["eval_loss"] - 0.1 and after["eval_accuracy"] == 1.0

    # The better-rated conversation is chosen; positions lie on the shared prompt, whose last
    # token is the one the chat template ends the generation prompt with.
    train = data_module["train_dataset"]
    for i, word in enumerate(WORDS):
        ex = train[i]
        assert tokenizer.decode(ex["chosen_output"][1:]).endswith(f"I like {word}.<|im_end|>\n")
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": word}], tokenize=False, add_generation_prompt=True
        )
        n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        assert ex["intervention_locations"] == [[1], [n]]  # f1, l1 after pyreft's leading pad token
        assert torch.equal(ex["chosen_output"][1 : n + 1], ex["rejected_output"][1 : n + 1])
        assert ex["chosen_output_mask"][0] == 0 and ex["chosen_output_mask"][1:].all()

    # The head trained with the interventions is in the checkpoint and comes back with it.
    saved = out / "reward_model"
    assert (saved / "base_parameters.safetensors").is_file()
    fresh = transformers.AutoModelForSequenceClassification.from_pretrained(pretrained, num_labels=1)
    fresh.config.pad_token_id = tokenizer.pad_token_id
    assert not torch.equal(fresh.score.weight, reft_model.model.score.weight)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FingerprintMismatch)  # the trained head restored: the base matches
        again = ReftModel.load(saved, fresh, tokenizer=tokenizer)
    assert torch.equal(fresh.score.weight, reft_model.model.score.weight)
    batch = data_module["data_collator"]([train[i] for i in range(4)])
    unit_locations = {"sources->base": (None, batch["intervention_locations"].permute(1, 0, 2).tolist())}
    base = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        _, mine = reft_model(base, unit_locations=unit_locations)
        _, theirs = again(base, unit_locations=unit_locations)
    assert torch.equal(mine.logits, theirs.logits)
