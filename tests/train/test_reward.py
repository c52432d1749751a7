"""reftlab's reward trainer: Bradley-Terry loss on a scalar head, pairwise accuracy, the head checkpointed."""

import numpy as np
import pytest
import torch
from transformers import EvalPrediction, LlamaConfig, LlamaForSequenceClassification, TrainingArguments

import reftlab
from reftlab.train.reward import pair_rewards, reward_accuracy


def conv(q, a):
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def test_reward_trainer_learns_to_prefer_the_chosen_answers(tok, tmp_path):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=260, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, pad_token_id=tok.pad_token_id, num_labels=1,
    )  # fmt: skip
    hooked = reftlab.load_model(LlamaForSequenceClassification(cfg), tok)
    rep = {"layer": 1, "component": "block_output", "intervention": reftlab.LoreftIntervention(embed_dim=64, low_rank_dimension=2)}  # fmt: skip
    reft_model = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=rep))
    reft_model.model.score.weight.requires_grad_(True)
    rows = [{"a": conv(w, f"I like {w}."), "b": conv(w, "No.")} for w in ["tea", "sun", "dog", "rain"]]
    data = reftlab.ReftRewardDataset(
        "r", None, tok, dataset=rows, conv_A_field="a", conv_B_field="b", num_interventions=1, position="l1"
    )
    args = TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=5, per_device_train_batch_size=4, learning_rate=5e-2,
        report_to=[], logging_steps=1, save_strategy="no", use_cpu=True,
    )  # fmt: skip
    trainer = reftlab.ReftTrainerForRewardModelling(
        model=reft_model, tokenizer=tok, args=args, train_dataset=data, eval_dataset=data,
        data_collator=reftlab.ReftRewardCollator(tokenizer=tok), compute_metrics=reward_accuracy,
    )  # fmt: skip
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < before["eval_loss"] - 0.1 and after["eval_accuracy"] == 1.0
    trainer.save_model(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "reft" / "base_parameters.safetensors").is_file()


@pytest.mark.user_errors
def test_pair_rewards_needs_a_scalar_head_and_row_pairs():
    chosen, rejected = pair_rewards(torch.tensor([[1.0], [0.0], [2.0], [3.0]]))
    assert chosen.tolist() == [1.0, 2.0] and rejected.tolist() == [0.0, 3.0]
    with pytest.raises(ValueError, match="num_labels=1"):
        pair_rewards(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="row pairs"):
        pair_rewards(torch.zeros(3, 1))


def test_reward_accuracy_counts_positive_margins():
    assert reward_accuracy(EvalPrediction(predictions=np.array([0.5, -1.0, 2.0, 0.1]), label_ids=None)) == {
        "accuracy": 0.75
    }
