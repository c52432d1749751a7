"""The native loop: it learns, resumes exactly, stops on NaN, trains only what it should."""

import pandas as pd
import pytest
import torch

import reftlab
from reftlab.data import build_dataset
from reftlab.train import TrainConfig, list_checkpoints

DF = pd.DataFrame(
    {"prompt": ["Hello there", "Hi", "What is up", "Say yes"], "response": ["yo", "hey you", "sky", "yes"]}
)


def make(tok, hf=None, positions="l1", layers=(1, 2), **kw):
    hooked = reftlab.load_model(hf or reftlab.tiny_llama(), tok)
    reps = [
        {"layer": L, "component": "block_output", "intervention": {"kind": "loreft", "rank": 2, **kw}} for L in layers
    ]
    rm = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=reps))
    return rm, build_dataset(DF, tok, positions=positions, num_interventions=len(reps))


def test_loss_goes_down_and_only_interventions_train(tok):
    torch.manual_seed(0)
    rm, ds = make(tok)
    before = {n: p.clone() for n, p in rm.model.named_parameters()}
    result = reftlab.train(rm, ds, epochs=12, batch_size=4, lr=0.1, progress=False, log_every=0, eval_dataset=ds)
    assert result.fast and len(result.losses) == 12
    assert result.losses[-1] < result.losses[0] - 0.15
    assert result.eval_losses and result.eval_losses[-1][0] == 12
    assert all(torch.equal(p, before[n]) for n, p in rm.model.named_parameters())


def test_resumed_run_reproduces_the_uninterrupted_loss_curve(tok, tmp_path):
    cfg = TrainConfig(
        epochs=3,
        batch_size=2,
        grad_accum=1,
        lr=2e-2,
        warmup_steps=2,
        progress=False,
        log_every=0,
        checkpoint_every=2,
        checkpoint_dir=str(tmp_path / "a"),
        keep_checkpoints=0,
        seed=3,
    )
    torch.manual_seed(0)
    rm, ds = make(tok, dropout=0.1)  # dropout: the restored RNG matters
    full = reftlab.train(rm, ds, cfg)
    assert [p.name for p in list_checkpoints(tmp_path / "a")] == ["step-2", "step-4"]

    torch.manual_seed(0)
    rm2, _ = make(tok, dropout=0.1)

    def stop(step, loss):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reftlab.train(rm2, ds, cfg.replace(checkpoint_dir=str(tmp_path / "b")), on_step=stop)
    torch.manual_seed(123)  # a fresh process would not share the RNG state either
    rm3, _ = make(tok, dropout=0.1)
    resumed = reftlab.train(rm3, ds, cfg.replace(checkpoint_dir=str(tmp_path / "b"), resume_from=str(tmp_path / "b")))
    assert resumed.losses == full.losses
    for a, b in zip(rm.interventions.parameters(), rm3.interventions.parameters()):
        assert torch.equal(a, b)


def test_grad_accumulation_matches_one_big_batch(tok):
    torch.manual_seed(0)
    rm, ds = make(tok)
    big = reftlab.train(rm, ds, epochs=2, batch_size=4, progress=False, log_every=0, shuffle=False, max_grad_norm=None)
    torch.manual_seed(0)
    rm2, _ = make(tok)
    acc = reftlab.train(
        rm2, ds, epochs=2, batch_size=2, grad_accum=2, progress=False, log_every=0, shuffle=False, max_grad_norm=None
    )
    assert acc.losses == pytest.approx(big.losses, abs=1e-5)


def test_nan_loss_stops_naming_the_step(tok):
    rm, ds = make(tok)
    with pytest.raises(FloatingPointError, match=r"loss is nan at step 2 \(epoch 1, examples \[\d, \d\]\)"):
        reftlab.train(rm, ds, epochs=3, batch_size=2, lr=float("inf"), progress=False, log_every=0, max_grad_norm=None)


def test_weight_decay_keeps_R_orthonormal(tok):
    rm, ds = make(tok)
    reftlab.train(rm, ds, epochs=5, batch_size=2, lr=5e-2, weight_decay=0.5, progress=False, log_every=0)
    for iv in rm.interventions.values():
        assert (iv.R @ iv.R.T - torch.eye(iv.rank)).abs().max() < 1e-5


def test_bad_data_is_rejected_before_training(tok):
    rm, ds = make(tok)
    with pytest.raises(ValueError, match="training set is empty"):
        reftlab.train(rm, ds.select([]), progress=False)
    bad = ds.to_list()
    bad[2]["intervention_locations"] = [[bad[2]["prompt_length"] + 1]] * 2
    with pytest.raises(ValueError, match=r"example 2: intervention location \d+ is beyond its prompt"):
        reftlab.train(rm, bad, progress=False)
    with pytest.raises(ValueError, match="TrainConfig.batch_size=0"):
        reftlab.train(rm, ds, batch_size=0)


def test_user_unfrozen_parameters_train_too(tok):
    rm, ds = make(tok)
    head = rm.model.model.norm.weight
    head.requires_grad_(True)
    before = head.detach().clone()
    reftlab.train(rm, ds, epochs=2, batch_size=4, lr=1e-2, progress=False, log_every=0)
    assert not torch.equal(head, before)


def test_peft_lora_parameters_stay_trainable_and_train(tok):
    peft = pytest.importorskip("peft")
    hf = peft.get_peft_model(
        reftlab.tiny_llama(), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    rm, ds = make(tok, hf=hf)
    lora = {n: p.detach().clone() for n, p in rm.model.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for n, p in rm.model.named_parameters() if "lora_" in n)
    result = reftlab.train(rm, ds, epochs=2, batch_size=4, lr=1e-2, progress=False, log_every=0)
    assert not result.fast  # LoRA below the lowest intervention: those outputs cannot be cached
    changed = [n for n, p in rm.model.named_parameters() if "lora_" in n and not torch.equal(p, lora[n])]
    assert changed


def test_a_failed_checkpoint_write_leaves_nothing_behind(tok, tmp_path, monkeypatch):
    import importlib

    ckpt = importlib.import_module("reftlab.train.checkpoint")  # `reftlab.train` is also the function

    rm, ds = make(tok)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        reftlab.train(
            rm,
            ds,
            epochs=2,
            batch_size=2,
            progress=False,
            log_every=0,
            checkpoint_every=1,
            checkpoint_dir=str(tmp_path),
        )
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_a_changed_run_and_warns_about_harmless_changes(tok, tmp_path):
    cfg = TrainConfig(
        epochs=2, batch_size=2, lr=2e-2, progress=False, log_every=0, checkpoint_every=2, checkpoint_dir=str(tmp_path)
    )
    torch.manual_seed(0)
    rm, ds = make(tok)
    reftlab.train(rm, ds, cfg)
    step2 = str(tmp_path / "step-2")
    resume = cfg.replace(resume_from=step2, checkpoint_every=0)
    before = [p.clone() for p in rm.interventions.parameters()]
    refused = {
        "lr=0.02, this TrainConfig has lr=0.001": {"lr": 1e-3},
        "batch_size=2, this TrainConfig has batch_size=4": {"batch_size": 4},
        "seed=0, this TrainConfig has seed=1": {"seed": 1},
        "schedule='linear', this TrainConfig has schedule='cosine'": {"schedule": "cosine"},
        "epochs=2, this TrainConfig has epochs=3.*the run's length sets the lr schedule": {"epochs": 3},
        "shuffle=True.*weight_decay=0.0, this TrainConfig has weight_decay=0.1": {
            "shuffle": False,
            "weight_decay": 0.1,
        },
    }
    for phrase, change in refused.items():
        with pytest.raises(ValueError, match=f"cannot resume: the checkpoint was trained with {phrase}"):
            reftlab.train(rm, ds, resume.replace(**change))
    with pytest.raises(ValueError, match="the training set differs from the one it was trained on"):
        reftlab.train(rm, build_dataset(DF.iloc[:3], tok, positions="l1", num_interventions=2), resume)
    # nothing of the model was touched by a refused resume
    assert all(torch.equal(a, b) for a, b in zip(before, rm.interventions.parameters()))

    with pytest.warns(UserWarning, match=r"changed setting: log_every: 0 -> 7") as caught:
        result = reftlab.train(rm, ds, resume.replace(log_every=7, fast=False))
    assert any("fast: None -> False" in str(w.message) for w in caught)
    assert result.steps == 4
    # A constant lr without warmup does not depend on the run's length: a longer run resumes.
    const = cfg.replace(schedule="constant", checkpoint_dir=str(tmp_path / "c"))
    torch.manual_seed(0)
    rm2, _ = make(tok)
    reftlab.train(rm2, ds, const)
    with pytest.warns(UserWarning, match="epochs: 2 -> 3"):
        longer = reftlab.train(rm2, ds, const.replace(epochs=3, checkpoint_every=0, resume_from=str(tmp_path / "c")))
    assert len(longer.losses) == 6
