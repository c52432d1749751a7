"""pyreft's ``examples/alpaca/train.py`` pattern, with ``from reftlab import ...`` as its one change.

The argument dataclasses, ``HfArgumentParser``, the layer doubling for ``f1+l1``,
``ReftSupervisedDataset``, ``ReftDataCollator(data_collator=DataCollatorForSeq2Seq(...))``
and ``ReftTrainer(...).train() / save_state() / save_model()`` are the script's; the
data is five examples in Alpaca's instruction/input/output JSON.
"""

import json
from dataclasses import dataclass, field

import torch
import transformers

from reftlab import (
    LoreftIntervention,
    ReftConfig,
    ReftDataCollator,
    ReftModel,
    ReftSupervisedDataset,
    ReftTrainer,
    get_reft_model,
)
from reftlab.data import alpaca_prompt

ALPACA = [
    {"instruction": "Repeat the word.", "input": "cat", "output": "cat"},
    {"instruction": "Repeat the word.", "input": "sun", "output": "sun"},
    {"instruction": "Say yes.", "input": "", "output": "yes"},
    {"instruction": "Say no.", "input": "", "output": "no"},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
]


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(default="yahma/llama-7b-hf")


@dataclass
class DataArguments:
    data_path: str = field(default=None, metadata={"help": "Path to the training data."})


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


def make_supervised_data_module(tokenizer, model, layers, training_args, data_args):
    train_dataset = ReftSupervisedDataset(
        "alpaca",
        data_args.data_path,
        tokenizer,
        data_split="train",
        seed=training_args.seed,
        max_n_example=training_args.max_n_train_example,
        input_field="input",
        instruction_field="instruction",
        output_field="output",
        num_interventions=len(layers),
        position=training_args.position,
        share_weights=training_args.share_weights,
    )
    data_collator_fn = transformers.DataCollatorForSeq2Seq(
        tokenizer=tokenizer, model=model, label_pad_token_id=-100, padding="longest"
    )
    data_collator = ReftDataCollator(data_collator=data_collator_fn)
    return dict(train_dataset=train_dataset, eval_dataset=None, data_collator=data_collator)


def run_script(argv):
    """The script's ``train()``, returning what the test inspects."""
    torch.manual_seed(42)
    parser = transformers.HfArgumentParser((ModelArguments, DataArguments, TrainingArguments))
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
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
    model = transformers.AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, dtype=torch.bfloat16)
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
    data_module = make_supervised_data_module(
        tokenizer=tokenizer, model=model, layers=layers, training_args=training_args, data_args=data_args
    )
    trainer = ReftTrainer(model=reft_model, tokenizer=tokenizer, args=training_args, **data_module)
    before = trainer.evaluate(eval_dataset=data_module["train_dataset"])["eval_loss"]
    trainer.train()
    trainer.save_state()
    trainer.save_model(output_dir=training_args.output_dir)
    after = trainer.evaluate(eval_dataset=data_module["train_dataset"])["eval_loss"]
    return tokenizer, reft_model, data_module, trainer, before, after


def test_alpaca_script_trains_lands_on_prompt_tokens_and_reloads(pretrained, tmp_path):
    data = tmp_path / "alpaca_data.json"
    data.write_text(json.dumps(ALPACA))
    out = tmp_path / "out"
    argv = [
        *("--model_name_or_path", str(pretrained), "--data_path", str(data), "--output_dir", str(out)),
        *("--layers", "1;3", "--rank", "2", "--position", "f1+l1", "--num_train_epochs", "3"),
        *("--per_device_train_batch_size", "5", "--per_device_eval_batch_size", "5", "--learning_rate", "4e-2"),
        *("--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "1", "--report_to", "none"),
        "--use_cpu",
    ]
    tokenizer, reft_model, data_module, trainer, before, after = run_script(argv)
    assert len(reft_model.interventions) == 4  # f1+l1 without share_weights: layers doubled
    assert after < before - 0.05

    # Positions: the first and the last prompt token, after pyreft's leading pad token.
    train = data_module["train_dataset"]
    for i, raw in enumerate(ALPACA):
        ex = train[i]
        n_prompt = len(tokenizer(alpaca_prompt(raw["instruction"], raw["input"] or None))["input_ids"])
        assert ex["attention_mask"][0] == 0 and ex["labels"][0] == -100  # the leading pad token
        assert ex["intervention_locations"] == [[1], [1], [n_prompt], [n_prompt]]  # pyreft: l1 at n_prompt - 1
        for row in ex["intervention_locations"]:
            assert ex["labels"][row[0]] == -100 and ex["attention_mask"][row[0]] == 1
        assert ex["labels"][n_prompt + 1] != -100  # the first response token is scored

    # save_state and save_model wrote the Trainer's state and a checkpoint that loads back.
    assert (out / "trainer_state.json").is_file()
    base = transformers.AutoModelForCausalLM.from_pretrained(pretrained, dtype=torch.bfloat16)
    again = ReftModel.load(out / "reft", base, tokenizer=tokenizer)
    for a, b in zip(reft_model.interventions.values(), again.interventions.values()):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    batch = data_module["data_collator"]([train[i] for i in range(len(train))])
    with torch.no_grad():
        reft_model.eval()
        mine = trainer.compute_loss(reft_model, batch)
        theirs = trainer.compute_loss(again, batch)
    assert torch.equal(mine, theirs)
