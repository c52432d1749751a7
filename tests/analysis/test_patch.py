"""Activation patching sweeps: known answers, and the same numbers as a sweep written with plain PyTorch hooks."""

import pandas as pd
import pytest
import torch
from helpers import arch_families, no_hooks_anywhere

import reftlab
from reftlab.analysis import SourceBatch, patch
from reftlab.models import tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def hooked():
    return reftlab.load_model(reftlab.tiny_llama(dtype=torch.float64, n_layers=3), reftlab.tiny_tokenizer())


def pairs(n=3, T=6, at=2, seed=0):
    """Clean and corrupted prompts that differ at position ``at`` only."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, 256, (n, T), generator=g)
    corrupted = clean.clone()
    corrupted[:, at] = (clean[:, at] + 1 + torch.randint(0, 200, (n,), generator=g)) % 256
    return clean, corrupted


def naive(hooked, clean, corrupted, answer, wrong):
    """One forward per (pair, layer, position), the clean layer input written by a forward pre-hook."""
    layers = hooked.model.model.layers
    inputs = {}
    handles = [
        layer.register_forward_pre_hook(lambda m, args, kw, i=i: inputs.__setitem__(i, kw.get("hidden_states", args[0] if args else None).clone()), with_kwargs=True)
        for i, layer in enumerate(layers)
    ]  # fmt: skip
    with torch.no_grad():
        hooked.model(input_ids=clean)
    for h in handles:
        h.remove()
    out = []
    for layer_i, layer in enumerate(layers):
        for pair in range(len(clean)):
            for pos in range(clean.shape[1]):

                def put(m, args, kw, layer_i=layer_i, pair=pair, pos=pos):
                    key = "hidden_states" if "hidden_states" in kw else None
                    h = (kw[key] if key else args[0]).clone()
                    h[0, pos] = inputs[layer_i][pair, pos]
                    if key:
                        return args, {**kw, key: h}
                    return (h, *args[1:]), kw

                handle = layer.register_forward_pre_hook(put, with_kwargs=True)
                try:
                    with torch.no_grad():
                        logits = hooked.model(input_ids=corrupted[pair : pair + 1]).logits[0, -1]
                finally:
                    handle.remove()
                out.append((pair, layer_i, pos, float(logits[answer] - logits[wrong])))
    return pd.DataFrame(out, columns=["pair", "layer", "position", "naive"])


def test_patching_the_differing_token_recovers_everything_and_others_nothing(hooked):
    clean, corrupted = pairs()
    table = patch(hooked, clean, corrupted, answer=5, wrong=7, layers=[0])
    assert set(table.columns) >= {"pair", "hook", "layer", "component", "position", "metric", "recovered"}
    assert len(table) == 3 * 6
    at = table[table.position == 2]
    before = table[table.position < 2]
    assert (at.recovered - 1).abs().max() < 1e-9
    assert (before.metric - before.corrupted).abs().max() < 1e-12  # nothing differs there
    assert no_hooks_anywhere(hooked)


def test_the_batched_sweep_gives_the_numbers_of_one_forward_per_cell(hooked):
    clean, corrupted = pairs(n=2, T=5, at=1, seed=1)
    table = patch(hooked, clean, corrupted, answer=5, wrong=7, batch_size=4)
    ref = naive(hooked, clean, corrupted, 5, 7)
    both = table.merge(ref, on=["pair", "layer", "position"])
    assert len(both) == len(ref) == 2 * 3 * 5
    assert (both.metric - both.naive).abs().max() < 1e-10


def test_a_subspace_patch_of_the_whole_space_is_the_full_patch(hooked):
    clean, corrupted = pairs(n=1, T=4, at=3)
    full = patch(hooked, clean, corrupted, answer=5, layers=[1])
    sub = patch(hooked, clean, corrupted, answer=5, layers=[1], subspace=torch.eye(hooked.d_model, dtype=torch.float64))
    assert (full.metric - sub.metric).abs().max() < 1e-10
    assert full.metric.between(0, 1).all()  # without `wrong`: the probability of the answer


def full_forward_patch(hooked, clean, corrupted, layer, component, pos, answer, wrong):
    """The logit difference of the corrupted prompts with the clean vector at (layer, component, pos),
    through a whole forward: a vanilla interchange (``reftlab.analysis.interchange``), not the sweep's path."""
    rep = {"layer": layer, "component": component, "intervention": {"kind": "vanilla"}}
    rm = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[rep]))
    at = torch.full((len(clean), 1), pos)
    with torch.no_grad():
        logits = rm.run(corrupted, positions=at, source=SourceBatch(clean, positions=at)).logits[:, -1]
    return (logits[:, answer] - logits[:, wrong]).tolist()


# a Llama-like family with sliding windows, one with mixed layer types, soft-capped logits and scaled
# embeddings, and two that keep their parts elsewhere (learned positions; tuple-returning blocks)
SWEEP_FAMILIES = ["mistral", "gemma2", "gpt2", "gpt_neox"]


@pytest.mark.parametrize("family", SWEEP_FAMILIES)
def test_the_sweep_from_cached_block_inputs_equals_full_forward_patches(family):
    fields = arch_families()[family]
    hooked = reftlab.load_model(
        tiny_model(family, d_model=32, n_layers=2, seed=0, dtype=torch.float64, **fields), tiny_tokenizer()
    )
    clean, corrupted = pairs(n=2, T=5, at=1, seed=2)
    components = ["block_input", "attention_output", "mlp_output", "block_output"]
    table = patch(hooked, clean, corrupted, answer=5, wrong=7, components=components, batch_size=3)
    assert len(table) == 2 * 2 * len(components) * 5
    worst = 0.0
    for (layer, component, pos), cells in table.groupby(["layer", "component", "position"]):
        ref = full_forward_patch(hooked, clean, corrupted, layer, component, pos, 5, 7)
        got = cells.sort_values("pair").metric.tolist()
        worst = max(worst, *(abs(a - b) for a, b in zip(got, ref)))
    assert worst < 1e-10
    assert no_hooks_anywhere(hooked)


@pytest.mark.user_errors
def test_bad_sweeps_name_the_problem(hooked):
    clean, corrupted = pairs()
    with pytest.raises(ValueError, match="one shape"):
        patch(hooked, clean, corrupted[:, :-1], answer=5)
    with pytest.raises(ValueError, match="component 'mlp'"):
        patch(hooked, clean, corrupted, answer=5, components=["mlp"])
    with pytest.raises(ValueError, match="outside the prompts"):
        patch(hooked, clean, corrupted, answer=5, positions=[9])
