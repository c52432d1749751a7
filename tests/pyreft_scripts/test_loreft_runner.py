"""The paper's runner, pyreft's ``examples/loreft/train.py`` + ``dataset.py``, with ``from reftlab import ...``.

Its task datasets subclass ``ReftDataset`` exactly as the runner's ``dataset.py`` does
(``preprocess`` / ``postprocess`` / ``tokenize`` and the fields they set: ``pad_mode``,
``fields_to_pad``, ``raw_dataset``, ``trigger_tokens``, ``num_labels``), and ``finetune``'s
steps run as written: ``TaskType``, every intervention built with the runner's full keyword
set, ``count_parameters``, ``ReftDataCollator`` around HF collators, the GLUE split into
in-training validation and test, ``load_best_model_at_end``, ``reft_model.save`` and the
runner's evaluation calls. Changes forced by transformers 5 rather than by reftlab:
``eval_strategy=`` (was ``evaluation_strategy=``), ``warmup_steps=<ratio>`` (was ``warmup_ratio=``); a Llama classifier needs
``config.pad_token_id``; RoBERTa (the runner's GLUE model) is not a supported
architecture yet, so GLUE runs on a Llama ``*ForSequenceClassification``.
"""

import os
import warnings
from copy import deepcopy

import datasets
import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import EvalPrediction

from reftlab import (
    ConsreftIntervention,
    DireftIntervention,
    FingerprintMismatch,
    LobireftIntervention,
    LoreftIntervention,
    NodireftIntervention,
    NoreftIntervention,
    ReftConfig,
    ReftDataCollator,
    ReftDataset,
    ReftModel,
    ReftTrainerForCausalLM,
    ReftTrainerForSequenceClassification,
    TaskType,
    get_reft_model,
)

IGNORE_INDEX = -100
task_config = {"commonsense": {"task_prompt_template": "%s\n", "trigger_tokens": "the correct answer is "}}
glue_task_to_keys = {"sst2": ("sentence", None), "rte": ("sentence1", "sentence2")}
intervention_mapping = {
    "NoreftIntervention": NoreftIntervention,
    "LoreftIntervention": LoreftIntervention,
    "ConsreftIntervention": ConsreftIntervention,
    "LobireftIntervention": LobireftIntervention,
    "DireftIntervention": DireftIntervention,
    "NodireftIntervention": NodireftIntervention,
}


class LoReftGLUEDataset(ReftDataset):
    def preprocess(self, kwargs):
        self.raw_dataset, self.trigger_tokens, self.num_labels = None, None, None
        self.pad_mode = "last"  # pad token placed at the end
        self.fields_to_pad = ["input_ids"]  # labels are classes: nothing to pad
        self.sentence1_key, self.sentence2_key = glue_task_to_keys[self.data_path]

    def postprocess(self, kwargs):
        is_regression = self.data_path == "stsb"
        self.num_labels = 1 if is_regression else len(self.task_dataset.features["label"].names)

    def tokenize(self, data_item):
        args = (
            (data_item[self.sentence1_key],)
            if self.sentence2_key is None
            else (data_item[self.sentence1_key], data_item[self.sentence2_key])
        )
        base_input_ids = self.tokenizer(
            *args, max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )["input_ids"][0]
        return {"input_ids": base_input_ids, "labels": data_item["label"]}, len(base_input_ids)


class LoReftSupervisedDataset(ReftDataset):
    def preprocess(self, kwargs):
        self.raw_dataset, self.trigger_tokens, self.num_labels = None, None, None
        dataset_config = task_config[self.task]
        self.task_prompt_template = dataset_config["task_prompt_template"]
        self.trigger_tokens = dataset_config["trigger_tokens"]
        self.original_data_split = self.data_split
        self.test_split = kwargs.get("test_split")
        if self.task in ["math", "commonsense", "ultrafeedback", "alpaca"]:
            self.data_path = os.path.join(self.data_path, self.data_split + ".json")

    def postprocess(self, kwargs):
        self.raw_dataset = self.task_dataset

    def tokenize(self, data_item):
        result = {}
        base_prompt = self.task_prompt_template % (data_item["instruction"])
        base_input = base_prompt + self.trigger_tokens + data_item["answer"] + self.tokenizer.eos_token
        base_prompt_ids = self.tokenizer(
            base_prompt, max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
        )["input_ids"][0]
        base_prompt_length = len(base_prompt_ids)
        if self.original_data_split == "train":
            base_input_ids = self.tokenizer(
                base_input, max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt"
            )["input_ids"][0]
            output_ids = deepcopy(base_input_ids)
            output_ids[:base_prompt_length] = IGNORE_INDEX
            result["input_ids"] = base_input_ids
            result["labels"] = output_ids
        else:
            result["input_ids"] = base_prompt_ids
        return result, base_prompt_length


def build(model, layers, rank, intervention_type, dtype=torch.float32):
    """The runner's representations: every kind gets the same full keyword set."""
    config = model.config
    return [
        {
            "layer": layer,
            "component": "block_output",
            "low_rank_dimension": rank,
            "intervention": intervention_mapping[intervention_type](
                embed_dim=config.hidden_size,
                low_rank_dimension=rank,
                dropout=0.0,
                dtype=dtype,
                act_fn=None,
                device="cpu",
                add_bias=False,
            ),
        }
        for layer in layers
    ]


def runner_args(output_dir, run_name, task, **kw):
    return TrainingArguments(
        output_dir=f"{output_dir}/{run_name}",
        run_name=run_name,
        num_train_epochs=kw.get("epochs", 3),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        gradient_accumulation_steps=1,
        eval_strategy="epoch" if task == "glue" else "no",
        save_strategy="epoch" if task == "glue" else "no",
        metric_for_best_model="accuracy" if task == "glue" else None,
        load_best_model_at_end=task == "glue",
        logging_strategy="steps",
        save_total_limit=1,
        logging_steps=1,
        lr_scheduler_type="linear",
        learning_rate=kw.get("lr", 5e-2),
        warmup_steps=0.0,  # transformers 5: the ratio is a float warmup_steps (was warmup_ratio=)
        optim="adamw_torch",
        weight_decay=0.0,
        report_to="none",
        use_cpu=True,
        seed=42,
        remove_unused_columns=False,
    )


def load_tokenizer(pretrained):
    tokenizer = AutoTokenizer.from_pretrained(pretrained, model_max_length=512, padding_side="right", use_fast=False)
    tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def write_glue(root):
    """A dataset folder named ``glue`` with config ``sst2``, shaped like the Hub's (ClassLabel labels)."""
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
    )
    words = ["day", "film", "song", "meal", "trip", "book"]
    for split, n in (("train", 6), ("validation", 6)):
        rows = {
            "sentence": [f"{'a good' if i % 2 else 'a bad'} {words[i]}" for i in range(n)],
            "label": [i % 2 for i in range(n)],
        }
        (root / "glue" / "sst2").mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(root / "glue" / "sst2" / f"{split}.parquet")
    (root / "glue" / "README.md").write_text(
        "---\nconfigs:\n- config_name: sst2\n  data_files:\n  - split: train\n    path: sst2/train.parquet\n"
        "  - split: validation\n    path: sst2/validation.parquet\n---\n"
    )


def test_runner_glue_seq_cls_trains_keeps_best_and_reloads_with_head(
    pretrained, tmp_path, monkeypatch, offline_datasets
):
    write_glue(tmp_path)
    monkeypatch.chdir(tmp_path)  # the runner's load_dataset("glue", "sst2") finds the local folder
    set_seed(42)
    task, train_dataset_str, test_split, position = "glue", "sst2", "validation", "f1+l1"
    layers = [1, 3]
    if "+" in position:  # not share_weights
        layers += layers
    tokenizer = load_tokenizer(pretrained)
    options = {"num_interventions": len(layers), "position": position, "share_weights": False}
    train_dataset = LoReftGLUEDataset(
        task, train_dataset_str, tokenizer, data_split="train", seed=42, max_n_example=None,
        **options, test_split=test_split,
    )  # fmt: skip
    raw_eval = LoReftGLUEDataset(task, train_dataset_str, tokenizer, data_split=test_split, seed=42, **options)
    assert raw_eval.raw_dataset is not None and train_dataset.raw_dataset is None
    n_in_train = len(raw_eval) // 2
    in_test_eval, in_train_eval = torch.utils.data.random_split(raw_eval, [len(raw_eval) - n_in_train, n_in_train])

    def in_training_compute_metrics(p: EvalPrediction):
        preds = p.predictions[0] if isinstance(p.predictions, tuple) else p.predictions
        return {"accuracy": float((np.argmax(preds, axis=1) == p.label_ids).mean())}

    config = AutoConfig.from_pretrained(
        pretrained, num_labels=train_dataset.num_labels, finetuning_task=train_dataset_str
    )
    model = AutoModelForSequenceClassification.from_pretrained(pretrained, config=config, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id  # a Llama classifier finds the last token by it
    data_collator = ReftDataCollator(data_collator=DataCollatorWithPadding(tokenizer=tokenizer, padding="longest"))
    task_type = TaskType.SEQ_CLS
    reft_model = get_reft_model(model, ReftConfig(representations=build(model, layers, 2, "LoreftIntervention")))
    for param in reft_model.model.score.parameters():  # allow_cls_grad
        param.requires_grad = True
    reft_model.model.train()
    n_params = reft_model.count_parameters(include_model=False)
    assert n_params == sum(p.numel() for p in reft_model.interventions.parameters())
    assert reft_model.count_parameters(include_model=True) == n_params + reft_model.model.score.weight.numel()

    output_dir, run_name = tmp_path / "official_results", "tiny.glue.sst2"
    trainer_class = ReftTrainerForSequenceClassification if task_type == TaskType.SEQ_CLS else ReftTrainerForCausalLM
    trainer = trainer_class(
        model=reft_model,
        tokenizer=tokenizer,
        args=runner_args(output_dir, run_name, task, epochs=4, lr=8e-2),
        train_dataset=train_dataset,
        eval_dataset=in_train_eval,
        data_collator=data_collator,
        compute_metrics=in_training_compute_metrics,
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses[-1] < losses[0]
    best = trainer.state.best_model_checkpoint
    assert best is not None and (tmp_path / best / "reft" / "base_parameters.safetensors").is_file()

    # Positions: first and last token of each sentence, never the pad token pad_mode="last" appends.
    for ex in (train_dataset[i] for i in range(len(train_dataset))):
        n = int(ex["attention_mask"].sum())
        assert ex["input_ids"][n] == tokenizer.pad_token_id and len(ex["input_ids"]) == n + 1
        assert ex["intervention_locations"] == [[0], [0], [n - 1], [n - 1]]

    reft_model.save(f"{output_dir}/{run_name}")
    reft_model.model.eval()
    for _, v in reft_model.interventions.items():
        _ = v[0].eval()

    def predictions(intervenable):  # the runner's GLUE evaluation loop
        preds = []
        loader = torch.utils.data.DataLoader(in_test_eval, batch_size=4, collate_fn=data_collator)
        with torch.no_grad():
            for inputs in loader:
                intervention_locations = inputs["intervention_locations"].permute(1, 0, 2)
                _, cf_outputs = intervenable(
                    {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]},
                    unit_locations={"sources->base": (None, intervention_locations.tolist())},
                )
                preds.append(cf_outputs.logits)
        return torch.cat(preds)

    fresh = AutoModelForSequenceClassification.from_pretrained(pretrained, config=config)
    fresh.config.pad_token_id = tokenizer.pad_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("error", FingerprintMismatch)  # the trained head restored: the base matches
        again = ReftModel.load(f"{output_dir}/{run_name}", fresh, tokenizer=tokenizer)
    assert torch.equal(predictions(reft_model), predictions(again.eval()))


def test_runner_commonsense_causal_lm_subclass_trains_on_its_prompt_positions(pretrained, tmp_path):
    data_dir = tmp_path / "datasets"
    (data_dir / "commonsense_170k").mkdir(parents=True)
    rows = [{"instruction": f"Is {w} a colour?", "answer": a} for w, a in [("red", "yes"), ("cat", "no")] * 2]
    datasets.Dataset.from_list(rows).to_json(data_dir / "commonsense_170k" / "train.json", lines=False)
    set_seed(42)
    task, position = "commonsense", "f3+l3"
    layers = [2]  # share_weights: one intervention per layer serves both ends
    tokenizer = load_tokenizer(pretrained)
    train_dataset = LoReftSupervisedDataset(
        task, os.path.join(data_dir, "commonsense_170k"), tokenizer, data_split="train", seed=42,
        max_n_example=None, num_interventions=len(layers), position=position, share_weights=True,
    )  # fmt: skip
    assert train_dataset.trigger_tokens == "the correct answer is "
    model = AutoModelForCausalLM.from_pretrained(pretrained, dtype=torch.float32)
    data_collator = ReftDataCollator(
        data_collator=DataCollatorForSeq2Seq(
            tokenizer=tokenizer, model=model, label_pad_token_id=-100, padding="longest"
        )
    )
    reft_model = get_reft_model(
        model, ReftConfig(representations=build(model, layers, 2, "NodireftIntervention")), set_device=True
    )
    trainer = ReftTrainerForCausalLM(
        model=reft_model,
        tokenizer=tokenizer,
        args=runner_args(tmp_path / "out", "tiny.commonsense", task, epochs=8, lr=1e-1),
        train_dataset=train_dataset,
        eval_dataset=None,
        data_collator=data_collator,
        compute_metrics=None,
    )
    before = trainer.evaluate(eval_dataset=train_dataset)["eval_loss"]
    trainer.train()
    assert trainer.evaluate(eval_dataset=train_dataset)["eval_loss"] < before - 0.05

    # f3+l3 on the instruction's tokens (the subclass's last_position), after the leading pad token.
    for ex, row in zip((train_dataset[i] for i in range(len(rows))), rows):
        n = len(tokenizer(f"{row['instruction']}\n")["input_ids"])
        assert ex["intervention_locations"] == [[1, 2, 3, n - 2, n - 1, n]]
        assert (ex["labels"][: n + 1] == IGNORE_INDEX).all() and ex["labels"][n + 1] != IGNORE_INDEX

    # The runner's save (reft_model.save) loads back onto a fresh base with the same loss.
    reft_model.save(str(tmp_path / "saved"))
    fresh = AutoModelForCausalLM.from_pretrained(pretrained, dtype=torch.float32)
    again = ReftModel.load(tmp_path / "saved", fresh, tokenizer=tokenizer)
    batch = data_collator([train_dataset[i] for i in range(len(rows))])
    with torch.no_grad():
        mine = trainer.compute_loss(reft_model.eval(), batch)
        theirs = trainer.compute_loss(again.eval(), batch)
    assert torch.equal(mine, theirs)
