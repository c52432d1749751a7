"""attribute(): ablation deltas against direct computations."""

import pandas as pd
import pytest
import torch
from helpers import no_hooks_anywhere

import reftlab
from reftlab.analysis import attribute

PROMPTS = ["hello there", "ok go", "a longer prompt here"]


def _reft(hooked, second_identity=True):
    reft = reftlab.get_reft_model(
        hooked,
        reftlab.ReftConfig(
            representations=[
                {"layer": 1, "component": "block_output", "positions": "l2", "kind": "loreft", "rank": 2},
                {
                    "layer": 2,
                    "component": "block_output",
                    "positions": "f1",
                    "intervention": {"kind": "loreft", "rank": 1, "init": "identity" if second_identity else "random"},
                },
            ]
        ),
    )
    with torch.no_grad():
        first = next(iter(reft.interventions.values()))
        first.weight.add_(3 * torch.randn_like(first.weight))
    return reft


def _loss(model_fn, hooked, prompts):
    total, n = 0.0, 0
    for p in prompts:
        ids = hooked.tokenizer(p, return_tensors="pt")["input_ids"]
        out = model_fn(ids)
        total += float(out.loss) * (ids.shape[1] - 1)
        n += ids.shape[1] - 1
    return total / n


def test_full_and_site_removed_losses_match_direct_runs(tiny_hooked):
    reft = _reft(tiny_hooked)
    df = attribute(reft, PROMPTS, targets=["a", 101], batch_size=2, progress=False)
    k0, k1 = list(reft.interventions)
    loss = df[df.metric == "loss"].set_index("removed")
    with torch.no_grad():
        full = _loss(lambda ids: reft.run(ids, labels=ids), tiny_hooked, PROMPTS)
        base = _loss(lambda ids: tiny_hooked.model(input_ids=ids, labels=ids), tiny_hooked, PROMPTS)
    assert loss.loc["none", "value"] == pytest.approx(full, rel=1e-5)
    assert loss.loc["none", "delta"] == 0.0
    # The identity-initialised site does nothing: removing it changes nothing; removing the
    # other then leaves the base model.
    assert loss.loc[k1, "delta"] == pytest.approx(0.0, abs=1e-6)
    assert loss.loc[k0, "value"] == pytest.approx(base, rel=1e-5)
    assert set(df.metric) == {"loss", "logit['a']", "logit['e']"}
    with torch.no_grad():
        want = sum(
            float(reft.run(_ids := tiny_hooked.tokenizer(p, return_tensors="pt")["input_ids"]).logits[0, -1, 97])
            for p in PROMPTS
        ) / len(PROMPTS)
    got = df[(df.removed == "none") & (df.metric == "logit['a']")].value.iloc[0]
    assert got == pytest.approx(want, rel=1e-5)
    assert no_hooks_anywhere(tiny_hooked)


def test_removing_every_direction_of_a_rank1_loreft_equals_removing_the_site(tiny_hooked):
    reft = _reft(tiny_hooked, second_identity=False)
    df = attribute(reft, PROMPTS, directions=True, progress=False)
    k0, k1 = list(reft.interventions)
    loss = df[df.metric == "loss"].set_index("removed")
    assert loss.loc[f"{k1}/dir_0", "value"] == pytest.approx(loss.loc[k1, "value"], rel=1e-5)
    assert {f"{k0}/dir_0", f"{k0}/dir_1"} <= set(loss.index)
    # Removing one of two directions is a partial ablation: strictly between the two ends here.
    assert loss.loc[f"{k0}/dir_0", "value"] != pytest.approx(loss.loc["none", "value"], rel=1e-6)
    assert df[df.removed == f"{k0}/dir_1"].direction.iloc[0] == 1


def test_completion_tokens_carry_the_loss(tiny_hooked):
    reft = _reft(tiny_hooked)
    data = pd.DataFrame({"prompt": ["hi ", "go "], "completion": ["yes", "no"]})
    df = attribute(reft, data, progress=False)
    with torch.no_grad():
        total, n = 0.0, 0
        for p, c in zip(data.prompt, data.completion):
            ids = tiny_hooked.tokenizer(p + c, return_tensors="pt")["input_ids"]
            labels = ids.clone()
            labels[:, : len(p)] = -100
            out = reft.run(ids, positions=None, prompt_lengths=[len(p)], labels=labels)
            total += float(out.loss) * len(c)
            n += len(c)
    assert df[(df.removed == "none") & (df.metric == "loss")].value.iloc[0] == pytest.approx(total / n, rel=1e-5)


def test_multi_token_targets_are_refused(tiny_hooked):
    with pytest.raises(ValueError, match="target 'ab' is 2 tokens"):
        attribute(_reft(tiny_hooked), PROMPTS, targets=["ab"], progress=False)
