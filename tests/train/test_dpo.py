"""DPO for ReFT: the reference is the base with interventions off (exactly), and the loss falls."""

import copy

import pytest
import torch
from transformers import TrainingArguments

import reftlab
from reftlab.train.dpo import dpo_loss, preference_pairs, reference_logps, sequence_logps
from reftlab.train.forward import run_batch

ROWS = [
    {"instruction": f"Say {w}.", "input": "", "chosen_output": w, "rejected_output": f"not {w}"}
    for w in ["cat", "dog", "sun", "sky"]
]


def preference_data(tok, rows=ROWS):
    return reftlab.ReftPreferenceDataset(
        "prefs", None, tok, dataset=rows, data_split="train", num_interventions=1, position="f1+l1",
        share_weights=True, instruction_field="instruction", input_field="input",
        chosen_output_field="chosen_output", rejected_output_field="rejected_output",
    )  # fmt: skip


def reft(hf, tok):
    rep = {"layer": 2, "component": "block_output", "intervention": reftlab.LoreftIntervention(embed_dim=64, low_rank_dimension=2)}  # fmt: skip
    return reftlab.get_reft_model(reftlab.load_model(hf, tok), reftlab.ReftConfig(representations=rep))


def test_pairs_share_the_prompt_and_its_locations(tok):
    data = preference_data(tok)
    batch = reftlab.ReftDataCollator(pad_token_id=tok.pad_token_id)([data[0], data[1]])
    pairs = preference_pairs(batch)
    assert pairs["input_ids"].shape[0] == 4
    for i, row in enumerate(ROWS[:2]):
        chosen, rejected = pairs["input_ids"][i], pairs["input_ids"][i + 2]
        n = len(tok(reftlab.data.alpaca_prompt(row["instruction"]))["input_ids"])
        assert torch.equal(chosen[:n], rejected[:n])  # the prompt, without pyreft's leading pad token
        assert pairs["intervention_locations"][i].tolist() == [[0, n - 1]]
        assert torch.equal(pairs["intervention_locations"][i], pairs["intervention_locations"][i + 2])
        scored = pairs["labels"][i] != -100
        assert tok.decode(pairs["labels"][i][scored]) == f"{row['chosen_output']}<eos>"
        assert tok.decode(pairs["labels"][i + 2][pairs["labels"][i + 2] != -100]) == f"{row['rejected_output']}<eos>"
        assert int(scored.nonzero()[0]) == n


def test_reference_logps_are_the_untouched_base_models_exactly(tok):
    hf = reftlab.tiny_llama(seed=0)
    untouched = copy.deepcopy(hf)
    reft_model = reft(hf, tok)
    data = preference_data(tok)
    pairs = preference_pairs(reftlab.ReftDataCollator(pad_token_id=tok.pad_token_id)([data[i] for i in range(4)]))
    with torch.no_grad():
        logits = untouched(input_ids=pairs["input_ids"], attention_mask=pairs["attention_mask"]).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        targets = pairs["labels"][:, 1:]
        picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        base = (picked * (targets != -100)).sum(-1)
        policy = sequence_logps(run_batch(reft_model, pairs).logits, pairs["labels"])
    assert torch.equal(reference_logps(reft_model, pairs), base)
    assert not torch.allclose(policy, base)  # the interventions do act on the policy


def test_dpo_loss_falls_and_reward_margins_grow(tok, tmp_path):
    torch.manual_seed(0)
    reft_model = reft(reftlab.tiny_llama(seed=0), tok)
    data = preference_data(tok)
    args = TrainingArguments(
        output_dir=str(tmp_path), num_train_epochs=4, per_device_train_batch_size=4, learning_rate=5e-2,
        report_to=[], logging_steps=1, save_strategy="no", use_cpu=True,
    )  # fmt: skip
    trainer = reftlab.ReftDPOTrainer(
        reft_model, reft_model, args=args, beta=0.5, tokenizer=tok, train_dataset=data, eval_dataset=data
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_loss"] < before["eval_loss"] - 0.05
    assert after["eval_rewards/margins"] > before["eval_rewards/margins"]
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert all("rewards/accuracies" in h for h in logged)
    assert all(not p.requires_grad for p in reft_model.model.parameters())  # no second copy, nothing of it trained


def test_dpo_refuses_another_reference_model_and_a_bad_beta(tok, tmp_path):
    reft_model = reft(reftlab.tiny_llama(seed=0), tok)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="interventions off"):
        reftlab.ReftDPOTrainer(reft_model, reftlab.tiny_llama(), args=args, tokenizer=tok)
    with pytest.raises(ValueError, match="beta="):
        reftlab.ReftDPOTrainer(reft_model, args=args, beta=0, tokenizer=tok)
    with pytest.raises(ValueError, match="tokenizer="):
        reftlab.ReftDPOTrainer(reft_model, args=args)


def test_dpo_loss_is_log2_at_equal_policy_and_reference():
    z = torch.zeros(3)
    losses, chosen, rejected = dpo_loss(z + 1, z, z + 1, z, beta=0.1)
    assert torch.allclose(losses, torch.log(torch.tensor(2.0))) and (chosen == 0).all() and (rejected == 0).all()
    losses, _, _ = dpo_loss(z + 2, z, z, z, beta=1.0)  # chosen gained 2 nats over the reference
    assert torch.allclose(losses, -torch.nn.functional.logsigmoid(torch.tensor(2.0)))
