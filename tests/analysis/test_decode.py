"""decode(): known answers from directions equal to (scaled) unembedding rows."""

import pytest
import torch

import reftlab
from reftlab.analysis import decode, direction_logits, mean_edit


@pytest.fixture
def llama():
    hf = reftlab.tiny_llama()
    with torch.no_grad():  # tied embeddings: make tokens 65 ('A') and 90 ('Z') the two longest rows
        W = hf.get_output_embeddings().weight
        W[65] *= 10
        W[90] *= 9
    return reftlab.load_model(hf, reftlab.tiny_tokenizer())


def _reft(hooked, kind="loreft", rank=2):
    return reftlab.get_reft_model(
        hooked,
        reftlab.ReftConfig(
            representations={"layer": 2, "component": "block_output", "positions": "l1", "kind": kind, "rank": rank}
        ),
    )


def test_a_direction_equal_to_a_tokens_unembedding_decodes_to_that_token(llama):
    W = llama.hf_model.get_output_embeddings().weight.detach()
    reft = _reft(llama)
    df = decode(reft, directions=torch.stack([W[65], -W[90]]), k=3)
    top0 = df[(df.direction == "dir_0") & (df.side == "top")].sort_values("rank")
    bottom1 = df[(df.direction == "dir_1") & (df.side == "bottom")].sort_values("rank")
    assert top0.iloc[0].token_id == 65 and top0.iloc[0].token == "A"
    assert bottom1.iloc[0].token_id == 90 and bottom1.iloc[0].token == "Z"
    assert top0.logit.is_monotonic_decreasing and bottom1.logit.is_monotonic_increasing
    assert len(df) == 2 * 2 * 3 and set(df.columns) == {
        "key",
        "direction",
        "side",
        "rank",
        "token_id",
        "token",
        "logit",
    }


def test_the_edit_vector_of_a_constant_edit_decodes_to_its_token(llama):
    W = llama.hf_model.get_output_embeddings().weight.detach()
    reft = _reft(llama, kind="lobireft", rank=1)
    iv = next(iter(reft.interventions.values()))
    with torch.no_grad():  # LobiReFT: edit = R^T b; R = W[65]/|W[65]|, b = 2
        iv.rotation.copy_(W[65][None])
        iv.bias.fill_(2.0)
    edit = mean_edit(reft, ["one", "two words"], next(iter(reft.interventions)))
    torch.testing.assert_close(edit, 2.0 * W[65] / W[65].norm(), atol=1e-5, rtol=1e-5)
    df = decode(reft, prompts=["one", "two words"], k=2)
    assert set(df.direction) == {"dir_0", "edit"}
    for name in ("dir_0", "edit"):
        row = df[(df.direction == name) & (df.side == "top") & (df["rank"] == 0)].iloc[0]
        assert row.token_id == 65


def test_layernorm_models_read_directions_through_the_centred_norm(tok):
    hooked = reftlab.load_model(reftlab.tiny_gpt2(), tok)
    ln = hooked.hf_model.transformer.ln_f
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1, 1)
    u = torch.randn(hooked.d_model)
    u = u / u.norm()
    c = u - u.mean()
    want = hooked.hf_model.lm_head.weight @ (ln.weight * c / (c.var(unbiased=False) + ln.eps).sqrt())
    torch.testing.assert_close(direction_logits(hooked, u)[0], want.detach(), atol=1e-4, rtol=1e-4)


def test_bad_decode_arguments(llama):
    reft = _reft(llama)
    with pytest.raises(ValueError, match="k=0 must be a positive int"):
        decode(reft, k=0)
    with pytest.raises(ValueError, match=r"directions has shape \(1, 5\)"):
        decode(reft, directions=torch.ones(1, 5))
    with pytest.raises(ValueError, match="no intervention 'x'"):
        decode(reft, key="x")
