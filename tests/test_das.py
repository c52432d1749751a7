"""DAS on a planted model: a binary variable written along a known direction u at the site.

The model is a tiny Llama whose blocks write nothing (o_proj and down_proj zero: the residual
stream is the embedding at every layer), whose variable tokens differ only along u (their common
part is orthogonal to u; the prompts differ in a random prefix), and whose unembedding reads u alone: answer 0
reads +u, answer 1 reads -u, every other token nothing. The
answer follows the variable; an interchange along u from a source with the other value flips it.
"""

import math

import pytest
import torch
from helpers import no_hooks_anywhere

import reftlab
from reftlab import das
from reftlab.subspace import principal_angles

D, A_TOKENS, B_TOKENS, ANSWER = 32, [10, 11, 12, 13], [20, 21, 22, 23], (100, 101)


def planted(seed=0):
    torch.manual_seed(seed)
    m = reftlab.tiny_llama(d_model=D, n_layers=2)
    u = torch.nn.functional.normalize(torch.randn(D), dim=0)
    with torch.no_grad():
        for layer in m.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = m.model.embed_tokens.weight  # tied with lm_head
        emb.mul_(0.1)
        common = torch.randn(D)
        common -= (common @ u) * u
        for toks, sign in ((A_TOKENS, 1.0), (B_TOKENS, -1.0)):
            for t in toks:
                emb[t] = sign * 3.0 * u + common
        # untied readout: only the two answers read the stream, weakly (so the loss never saturates
        # and keeps pulling the rotation onto u)
        m.lm_head.weight = torch.nn.Parameter(torch.zeros_like(emb))
        m.lm_head.weight[ANSWER[0]] = 2.0 * u
        m.lm_head.weight[ANSWER[1]] = -2.0 * u
    return reftlab.load_model(m, reftlab.tiny_tokenizer()), u


def pairs(n, seed):
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(30, 90, (n, 4), generator=g)
    a = torch.tensor(A_TOKENS)[torch.randint(4, (n,), generator=g)]
    b = torch.tensor(B_TOKENS)[torch.randint(4, (n,), generator=g)]
    flip = torch.rand(n, generator=g) < 0.5
    base_var, src_var = torch.where(flip, a, b), torch.where(flip, b, a)
    base = torch.cat([prefix, base_var[:, None]], 1)
    src = torch.cat([torch.randint(30, 90, (n, 4), generator=g), src_var[:, None]], 1)
    labels = torch.where(flip, ANSWER[1], ANSWER[0])  # the source's value decides
    return das.CounterfactualPairs(base_ids=base, source_ids=src, labels=labels)


@pytest.fixture(scope="module")
def fitted():
    hooked, u = planted()
    data = pairs(160, seed=1)
    # the model does what was planted: unpatched, it answers with the base's own value
    with torch.no_grad():
        logits = hooked.model(input_ids=data.base_ids).logits[:, -1]
    assert bool((logits.argmax(-1) != data.labels).all())
    result = das.fit(hooked, data, "blocks.0.hook_resid_post", rank=1, steps=80, lr=5e-2, seed=0)
    return hooked, u, result


def test_das_recovers_the_planted_direction(fitted):
    hooked, u, result = fitted
    angle = math.radians(float(principal_angles(result.subspace, u)[0]))
    assert angle < 0.1, angle
    assert result.iia >= 0.99 and result.train_iia >= 0.99
    assert no_hooks_anywhere(hooked)


def test_a_random_subspace_of_the_same_rank_does_not(fitted):
    hooked, u, result = fitted
    rm = das.das_model(hooked, "blocks.0.hook_resid_post", rank=1)
    angle = math.radians(float(principal_angles(rm.interventions[result.key].subspace(), u)[0]))
    assert angle > 0.5
    assert das.iia(rm, pairs(64, seed=2)) < 0.5


def test_the_rotation_saves_and_loads_as_a_checkpoint(fitted, tmp_path):
    hooked, _, result = fitted
    folder = result.reft_model.save(tmp_path / "das")
    assert (folder / "interventions.safetensors").is_file() and (folder / "reftlab_config.json").is_file()
    loaded = reftlab.ReftModel.load(folder, hooked)
    assert torch.equal(loaded.interventions[result.key].subspace(), result.subspace)
    held = pairs(64, seed=3)
    assert das.iia(loaded, held) == das.iia(result.reft_model, held) >= 0.99
