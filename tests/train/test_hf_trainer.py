"""pyreft's Trainer classes on transformers 5."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import DataCollatorWithPadding, LlamaConfig, LlamaForSequenceClassification, TrainingArguments

import reftlab
from reftlab.train.loss import plain_loss

PROMPTS, RESPONSES = ["Hello there", "Hi", "What is up", "Say yes"], ["yo", "hey you", "sky", "yes"]


def loreft_model(tok, hf=None):
    hooked = reftlab.load_model(hf or reftlab.tiny_llama(), tok)
    cfg = reftlab.ReftConfig(
        representations={
            "layer": 1,
            "component": "block_output",
            "low_rank_dimension": 2,
            "intervention": reftlab.LoreftIntervention(embed_dim=64, low_rank_dimension=2),
        }
    )
    return reftlab.get_reft_model(hooked, cfg)


def args(tmp_path, **kw):
    return TrainingArguments(
        output_dir=str(tmp_path),
        num_train_epochs=4,
        per_device_train_batch_size=2,
        learning_rate=5e-2,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        **kw,
    )


@pytest.mark.parametrize("tok_kw", ["tokenizer", "processing_class"])
def test_causal_lm_trainer_trains_only_interventions_and_keeps_R_orthonormal(tok, tmp_path, tok_kw):
    rm = loreft_model(tok)
    dm = reftlab.make_last_position_supervised_data_module(tok, rm.model, PROMPTS, RESPONSES)
    base = {n: p.clone() for n, p in rm.model.named_parameters()}
    iv = next(iter(rm.interventions.values()))
    w0 = iv.weight.detach().clone()
    full = dm["data_collator"]([dm["train_dataset"][i] for i in range(4)])
    loss0 = plain_loss(rm, full).item()
    trainer = reftlab.ReftTrainerForCausalLM(model=rm, args=args(tmp_path, weight_decay=0.5), **{tok_kw: tok}, **dm)
    trainer.train()
    opt_params = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in rm.interventions.parameters()}
    assert not torch.equal(iv.weight, w0)
    assert all(torch.equal(p, base[n]) for n, p in rm.model.named_parameters())
    assert (iv.R @ iv.R.T - torch.eye(2)).abs().max() < 1e-5
    assert [h for h in trainer.state.log_history if "loss" in h]
    assert plain_loss(rm, full).item() < loss0 - 0.05
    trainer.save_model(str(tmp_path / "saved"))
    saved = load_file(str(tmp_path / "saved" / "reft" / "interventions.safetensors"))
    assert torch.equal(saved["interventions.layer_1_comp_block_output#0.weight"], iv.weight.detach())
    again = reftlab.ReftModel.load(tmp_path / "saved" / "reft", rm.hooked)
    assert torch.equal(next(iter(again.interventions.values())).weight, iv.weight.detach())


class Recording(reftlab.ReftTrainerForCausalLM):
    """Records the loss of every training step."""

    def compute_loss(self, *a, **kw):
        loss = super().compute_loss(*a, **kw)
        self.__dict__.setdefault("losses", []).append(loss.item())
        return loss


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_causal_lm_trainer_takes_the_fast_path_with_the_plain_paths_losses(tok, tmp_path, family):
    hf = reftlab.tiny_llama if family == "llama" else reftlab.tiny_gpt2
    prompts, responses = PROMPTS * 2, RESPONSES * 2  # repeated texts: the content-keyed cache serves both copies
    runs = {}
    for fast in (True, False):
        torch.manual_seed(0)
        rm = loreft_model(tok, hf(seed=1, **({"n_layers": 3} if family == "gpt2" else {})))
        for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
            setattr(rm.hooked.hf_model.config, name, 0.0)
        for m in rm.hooked.hf_model.modules():  # GPT-2's dropout would make both runs random
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        dm = reftlab.make_last_position_supervised_data_module(tok, rm.model, prompts, responses)
        trainer = Recording(model=rm, args=args(tmp_path / str(fast)), tokenizer=tok, fast=fast, **dm)
        trainer.train()
        assert (trainer.fast_path is not None) is fast
        runs[fast] = (trainer.losses, next(iter(rm.interventions.values())).weight.detach())
    assert len(runs[True][0]) == len(runs[False][0]) == 16  # 4 epochs of 4 batches
    assert runs[True][0] == pytest.approx(runs[False][0], abs=1e-5)
    torch.testing.assert_close(runs[True][1], runs[False][1], atol=1e-5, rtol=0)


class Supervised(reftlab.ReftDataset):
    """pyreft's layout: prompt + response, the prompt's labels -100, l1 = the last prompt token."""

    def preprocess(self, kwargs):
        pass

    def tokenize(self, item):
        prompt, response = tok_ids(self.tokenizer, item["prompt"]), tok_ids(self.tokenizer, item["response"])
        labels = torch.cat([torch.full_like(prompt, -100), response])
        return {"input_ids": torch.cat([prompt, response]), "labels": labels}, len(prompt)


def tok_ids(tok, text):
    return tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"][0]


def reft_dataset(tok):
    rows = [{"prompt": p, "response": r} for p, r in zip(PROMPTS, RESPONSES)]
    return Supervised("t", None, tok, dataset=rows, position="f1+l1", num_interventions=1, share_weights=True)


def test_reft_dataset_batches_take_the_fast_path_with_the_plain_paths_losses(tok, tmp_path, caplog):
    ds = reft_dataset(tok)
    assert ds[0]["attention_mask"][0] == 0  # pad_mode "first": a masked pad in front of every example
    rm = loreft_model(tok)
    collate = reftlab.data.collator_for(tok)
    trainer = reftlab.ReftTrainerForCausalLM(
        model=rm, args=args(tmp_path), tokenizer=tok, train_dataset=ds, data_collator=collate, fast=True
    )
    batch = collate([ds[i] for i in range(4)])
    batch["attention_mask"][1, -1] = 0  # and a masked token in the middle of a row (mixed padding)
    for _ in range(2):  # filling the cache, then from it
        assert trainer.compute_loss(rm, batch).item() == pytest.approx(plain_loss(rm, batch).item(), abs=1e-5)
    assert trainer.fast_path is not None and not caplog.records


def test_a_fallback_is_an_error_with_fast_true_and_logged_once_otherwise(tok, tmp_path, caplog):
    rm = loreft_model(tok)
    dm = reftlab.make_last_position_supervised_data_module(tok, rm.model, PROMPTS, RESPONSES)
    batch = dm["data_collator"]([dm["train_dataset"][i] for i in range(4)])
    batch["attention_mask"][0, 0] = 0  # a masked token whose next-token prediction is scored: only the
    batch["labels"][0, 1] = batch["input_ids"][0, 1]  # plain path computes what the HF loss means here
    strict = reftlab.ReftTrainerForCausalLM(model=rm, args=args(tmp_path), tokenizer=tok, fast=True, **dm)
    with pytest.raises(ValueError, match="fast=True but the fast path does not apply: a padding token's next-token"):
        strict.compute_loss(rm, batch)
    trainer = reftlab.ReftTrainerForCausalLM(model=rm, args=args(tmp_path), tokenizer=tok, **dm)
    with caplog.at_level("WARNING", logger="reftlab.train.hf_trainer"):
        for _ in range(3):
            assert trainer.compute_loss(rm, batch).item() == plain_loss(rm, batch).item()
    assert [r.getMessage() for r in caplog.records] == [
        "reftlab: this step takes the plain path (same loss, slower): a padding token's next-token prediction "
        "is scored (labels[b, t+1] != -100 where attention_mask[b, t] == 0)"
    ]


def test_causal_lm_trainer_fast_true_on_an_unsupported_model_is_an_error(tok, tmp_path):
    hooked = reftlab.load_model(reftlab.tiny_llama(), tok)
    rm = reftlab.get_reft_model(
        hooked, reftlab.ReftConfig(representations=[{"hook": "hook_embed", "kind": "loreft", "rank": 2}])
    )
    dm = reftlab.make_last_position_supervised_data_module(tok, rm.model, PROMPTS, RESPONSES)
    trainer = reftlab.ReftTrainerForCausalLM(model=rm, args=args(tmp_path), tokenizer=tok, fast=True, **dm)
    with pytest.raises(ValueError, match="fast=True but the fast path does not apply: llama: an intervention sits"):
        trainer.train()


def test_tokenizer_given_twice_differently_is_an_error(tok, tmp_path):
    rm = loreft_model(tok)
    with pytest.raises(ValueError, match="give the tokenizer once"):
        reftlab.ReftTrainerForCausalLM(
            model=rm, tokenizer=tok, processing_class=reftlab.tiny_tokenizer(), args=args(tmp_path)
        )


def test_sequence_classification_trainer_uses_the_heads_loss(tok, tmp_path):
    rm = loreft_model(tok, _classifier(tok))
    rm.model.score.weight.requires_grad_(True)  # unfrozen on purpose: trains with the interventions
    head0 = rm.model.score.weight.detach().clone()
    texts = ["good day", "bad day", "very good", "very bad"]
    enc = [tok(t) for t in texts]
    train = [
        {"input_ids": e["input_ids"], "labels": [lab], "intervention_locations": [[len(e["input_ids"]) - 1]]}
        for e, lab in zip(enc, [1, 0, 1, 0])
    ]

    def collate(items):
        out = reftlab.ReftDataCollator(pad_token_id=256)([{k: v for k, v in x.items() if k != "labels"} for x in items])
        out["labels"] = torch.tensor([x["labels"][0] for x in items])
        return out

    trainer = reftlab.ReftTrainerForSequenceClassification(
        model=rm, tokenizer=tok, args=args(tmp_path), train_dataset=train, data_collator=collate
    )
    trainer.train()
    assert not torch.equal(rm.model.score.weight, head0)
    batch = collate(train)
    out = rm.run(
        batch["input_ids"],
        batch["attention_mask"],
        positions=batch["intervention_locations"][:, 0],
        labels=batch["labels"],
    )
    assert out.logits.shape == (4, 2) and torch.isfinite(out.loss)


def _resume_args(out, save_steps=2):
    return TrainingArguments(
        output_dir=str(out),
        num_train_epochs=2,
        per_device_train_batch_size=2,
        learning_rate=5e-2,
        report_to=[],
        logging_steps=1,
        save_strategy="steps",
        save_steps=save_steps,
        use_cpu=True,
        seed=7,
    )


def _step_losses(trainer):
    return {h["step"]: h["loss"] for h in trainer.state.log_history if "loss" in h}


@pytest.mark.parametrize("checkpoint", ["checkpoint-2", "checkpoint-3"])  # mid-epoch, epoch boundary
def test_resume_from_checkpoint_matches_an_uninterrupted_run(tok, tmp_path, checkpoint):
    # 6 examples, batch 2: 3 steps per epoch, 6 in all; checkpoints every 2 steps (and at 3 below).
    prompts, responses = [*PROMPTS, "One", "Two"], [*RESPONSES, "1", "2"]
    torch.manual_seed(0)
    full = loreft_model(tok)
    dm = reftlab.make_last_position_supervised_data_module(tok, full.model, prompts, responses)
    args = _resume_args(tmp_path / "a", save_steps=2 if checkpoint == "checkpoint-2" else 3)
    uninterrupted = reftlab.ReftTrainerForCausalLM(model=full, tokenizer=tok, args=args, **dm)
    uninterrupted.train()

    torch.manual_seed(1)  # other initial weights: the checkpoint must replace them
    again = loreft_model(tok)
    resumed = reftlab.ReftTrainerForCausalLM(model=again, tokenizer=tok, args=_resume_args(tmp_path / "b"), **dm)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / checkpoint))

    # The resumed log holds the checkpoint's history up to its step, then its own steps: the
    # same loss curve as the uninterrupted run, exactly.
    assert resumed.state.global_step == 6 and _step_losses(resumed) == _step_losses(uninterrupted)
    for x, y in zip(full.interventions.values(), again.interventions.values()):
        assert all(torch.equal(p, q) for p, q in zip(x.state_dict().values(), y.state_dict().values()))


def _classifier(tok):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=260,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=256,
        num_labels=2,
    )
    return LlamaForSequenceClassification(cfg).eval()


def _classification_data(tok):
    texts, labels = ["good day", "bad day", "very good", "very bad"], [1, 0, 1, 0]
    return [
        {"input_ids": tok(t)["input_ids"], "labels": lab, "intervention_locations": [[len(tok(t)["input_ids"]) - 1]]}
        for t, lab in zip(texts, labels)
    ]


def test_sequence_classification_head_is_saved_resumed_and_loaded(tok, tmp_path):
    collate = reftlab.ReftDataCollator(data_collator=DataCollatorWithPadding(tok))
    train = _classification_data(tok)

    def run(out, seed, resume=None):
        rm = loreft_model(tok, _classifier(tok))
        torch.manual_seed(seed)
        torch.nn.init.normal_(rm.model.score.weight)  # seed 1: another head, replaced by the checkpoint's
        rm.model.score.weight.requires_grad_(True)
        trainer = reftlab.ReftTrainerForSequenceClassification(
            model=rm, tokenizer=tok, args=_resume_args(out), train_dataset=train, data_collator=collate
        )
        trainer.train(resume_from_checkpoint=resume)
        return rm, trainer

    full, trainer = run(tmp_path / "a", seed=0)
    head_file = tmp_path / "a" / "checkpoint-2" / "reft" / "base_parameters.safetensors"
    assert set(load_file(str(head_file))) == {"score.weight"}
    resumed, _ = run(tmp_path / "b", seed=1, resume=str(tmp_path / "a" / "checkpoint-2"))
    assert torch.equal(resumed.model.score.weight, full.model.score.weight)

    trainer.save_model(str(tmp_path / "final"))
    fresh = _classifier(tok)
    torch.nn.init.zeros_(fresh.score.weight)
    again = reftlab.ReftModel.load(tmp_path / "final" / "reft", fresh, tokenizer=tok)
    assert torch.equal(fresh.score.weight, full.model.score.weight)
    batch = collate(train)
    positions = batch["intervention_locations"][:, 0]
    with torch.no_grad():
        want = full.eval().run(batch["input_ids"], batch["attention_mask"], positions=positions).logits
        got = again.eval().run(batch["input_ids"], batch["attention_mask"], positions=positions).logits
    assert torch.equal(want, got)


def test_only_the_main_process_writes_checkpoints(tok, tmp_path, monkeypatch):
    rm = loreft_model(tok)
    dm = reftlab.make_last_position_supervised_data_module(tok, rm.model, PROMPTS, RESPONSES)
    trainer = reftlab.ReftTrainerForCausalLM(model=rm, tokenizer=tok, args=args(tmp_path / "out"), **dm)
    monkeypatch.setattr(TrainingArguments, "should_save", property(lambda self: False))  # as on rank 1
    trainer.save_model(str(tmp_path / "rank1"))
    assert not (tmp_path / "rank1").exists()
    monkeypatch.undo()
    trainer.save_model(str(tmp_path / "rank0"))
    assert (tmp_path / "rank0" / "reft" / "interventions.safetensors").is_file()


def test_resume_refuses_a_checkpoint_of_another_configuration(tok, tmp_path):
    rm = loreft_model(tok)
    rm.save(tmp_path / "ckpt" / "reft")
    other = reftlab.get_reft_model(
        reftlab.load_model(reftlab.tiny_llama(), tok),
        reftlab.ReftConfig(
            representations={
                "layer": 2,
                "component": "block_output",
                "intervention": reftlab.LoreftIntervention(embed_dim=64, low_rank_dimension=2),
            }
        ),
    )
    before = [p.clone() for p in other.interventions.parameters()]
    trainer = reftlab.ReftTrainerForCausalLM(model=other, tokenizer=tok, args=args(tmp_path / "out"))
    with pytest.raises(ValueError, match="resume with the configuration it was saved from"):
        trainer._load_from_checkpoint(str(tmp_path / "ckpt"))
    assert all(torch.equal(p, q) for p, q in zip(before, other.interventions.parameters()))


class Stream(torch.utils.data.IterableDataset):
    """A streaming training set: no len(), no indexing."""

    def __init__(self, examples):
        self.examples = examples

    def __iter__(self):
        return iter(self.examples)


@pytest.mark.parametrize("kind", ["torch", "datasets"])
def test_streaming_data_trains_on_the_fast_path_with_the_plain_paths_losses(tok, tmp_path, kind):
    import datasets

    runs = {}
    for fast in (True, False):
        torch.manual_seed(0)
        rm = loreft_model(tok)
        dm = reftlab.make_last_position_supervised_data_module(tok, rm.model, PROMPTS, RESPONSES)
        examples = [dict(dm["train_dataset"][i]) for i in range(len(PROMPTS))] * 2
        if kind == "torch":
            dm["train_dataset"] = Stream(examples)
        else:
            columns = ("input_ids", "labels", "intervention_locations", "attention_mask")
            rows = [{k: torch.as_tensor(e[k]).tolist() for k in columns if k in e} for e in examples]
            dm["train_dataset"] = datasets.IterableDataset.from_generator(lambda rows=rows: iter(rows))
        trainer = Recording(model=rm, args=args(tmp_path / str(fast), max_steps=4), tokenizer=tok, fast=fast, **dm)
        trainer.train()
        assert (trainer.fast_path is not None) is fast
        runs[fast] = trainer.losses
    assert len(runs[True]) == 4 and runs[True] == pytest.approx(runs[False], abs=1e-5)


def test_reftlab_train_names_a_streaming_set_it_cannot_index(tok):
    rm = loreft_model(tok)
    with pytest.raises(TypeError, match="the training set is a Stream without len\\(\\) and indexing"):
        reftlab.train(rm, Stream([]), epochs=1, progress=False)
