"""The vLLM plugin's bookkeeping without vLLM: packed rows per edit equal reftlab's own positions.

``plan`` sees what vLLM's runner sees (each request's rows in the packed batch, the tokens its
KV cache already holds, its prompt length) and must edit exactly what ``reftlab.attach`` edits
when the same request runs alone, chunk by chunk, in ``reftlab.generate``.
"""

import pytest
import torch

import reftlab
from reftlab.attach import apply_at_positions
from reftlab.interventions import build
from reftlab.serve.vllm.plan import (
    Segment,
    ServedReft,
    ServedSite,
    apply,
    cache_salt,
    plan,
    resolve,
)
from reftlab.sites import Positions

D = 8


def _reft(name, kind, positions, layer=1, seed=0, **kw):
    torch.manual_seed(seed)
    iv = build({"kind": kind, "d_model": D, "rank": 2, "dtype": torch.float64, **kw}).eval()
    with torch.no_grad():
        for p in iv.parameters():
            p.add_(torch.randn_like(p))  # not an identity
    return ServedReft(name, (ServedSite(layer, iv, Positions.parse(positions)),), fingerprint=f"{name}-{seed}")


REFTS = {
    "lo": _reft("lo", "loreft", "l1", seed=1),
    "fl": _reft("fl", "direft", "f1+l2", seed=2),
    "every": _reft("every", "loreft", "all", seed=3),
    "pair": _reft("pair", "concat_loreft", "f1+l1", seed=4),
    "lo2": _reft("lo2", "noreft", "l3", seed=5),
}


def _alone(seq, route, prompt_len):
    """Reference: the request alone as reftlab.generate runs it (the prompt in one forward, then one
    token per step), edited by reftlab.attach; the whole edited sequence."""
    out, at = [], 0
    for width in [prompt_len] + [1] * (len(seq) - prompt_len):
        h = seq[None, at : at + width].clone()
        for name in route:
            for site in REFTS[name].sites:
                pos = site.positions
                idx = (
                    None
                    if pos.all
                    else reftlab.sites.resolve_positions(pos, torch.ones(1, prompt_len, dtype=torch.long))
                )
                h = apply_at_positions(h, site.edit, idx, offset=at)
        out.append(h[0])
        at += width
    return torch.cat(out)


@pytest.mark.parametrize(
    "requests",
    [
        # (route, prompt length, chunk widths: prefill chunks then one-token decode steps)
        [(("lo",), 5, [5, 1, 1]), (("fl",), 7, [3, 4, 1]), ((), 4, [4, 1]), (("every",), 6, [2, 4, 1, 1])],
        [(("lo", "fl"), 9, [9, 1]), (("fl", "lo"), 9, [9, 1]), (("lo", "fl"), 1, [1, 1, 1])],
        [(("pair",), 6, [6, 1]), (("pair", "every"), 3, [3, 1]), (("lo2",), 2, [2, 1])],
    ],
    ids=["mixed-chunks", "order-per-request", "groups-and-short-prompts"],
)
def test_packed_steps_edit_what_each_request_alone_edits(requests):
    torch.manual_seed(0)
    seqs = [torch.randn(sum(chunks), D, dtype=torch.float64) for _, _, chunks in requests]
    expected = [_alone(s, route, n) for s, (route, n, _) in zip(seqs, requests)]
    resolved = [resolve(route, n, REFTS) for route, n, _ in requests]
    for step in range(max(len(c) for _, _, c in requests)):
        live = [i for i, (_, _, c) in enumerate(requests) if step < len(c)]
        segments, packed, start = [], [], 0
        for i in live:
            route, n, chunks = requests[i]
            done = sum(chunks[:step])
            segments.append(Segment(route, n, done, chunks[step], start))
            packed.append(seqs[i][done : done + chunks[step]])
            start += chunks[step]
        x = torch.cat(packed)
        ops = plan(segments, [resolved[i] for i in live])
        got = apply(x.clone(), ops.get(1, []))
        for seg, i in zip(segments, live):
            want = expected[i][seg.computed : seg.computed + seg.width]
            torch.testing.assert_close(got[seg.start : seg.start + seg.width], want, rtol=0, atol=1e-12)


KINDS = {
    **{k: {"kind": k, "rank": 2} for k in ("loreft", "noreft", "direft", "nodireft", "consreft", "lobireft")},
    "simgate": {"kind": "simgate", "child": {"kind": "loreft", "rank": 2}},
    "simgate_pair": {"kind": "simgate", "child": {"kind": "loreft", "rank": 2}, "source": "pair"},
    "concat": {"kind": "concat_loreft", "rank": 2},
    "sum": {"kind": "sum", "children": [{"kind": "loreft", "rank": 2}, {"kind": "direft", "rank": 2}]},
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_servable_kind_edits_in_the_packed_batch_what_it_edits_alone(kind):
    spec = dict(KINDS[kind])
    torch.manual_seed(7)
    iv = build({"d_model": D, "dtype": torch.float64, **spec}).eval()
    with torch.no_grad():
        for p in iv.parameters():
            p.add_(torch.randn_like(p))
    REFTS[kind] = ServedReft(kind, (ServedSite(1, iv, Positions.parse("f1+l1")),), fingerprint=kind)
    try:
        test_packed_steps_edit_what_each_request_alone_edits([((kind,), 6, [6, 1, 1]), ((kind, "lo"), 4, [4, 1])])
    finally:
        del REFTS[kind]


def test_requests_with_one_route_share_one_op_per_site():
    segs = [Segment(("lo",), 4, 0, 4, 0), Segment(("lo",), 3, 0, 3, 4), Segment(("fl",), 5, 0, 5, 7)]
    ops = plan(segs, [resolve(s.route, s.prompt_len, REFTS) for s in segs])
    assert [op.rows.tolist() for op in ops[1]] == [[3, 6], [7, 10, 11]]


def test_a_group_split_over_two_forwards_is_an_error_naming_the_fix():
    seg = Segment(("pair",), 6, 0, 3, 0)  # f1 in this chunk, l1 in the next
    with pytest.raises(ValueError, match="chunked prefill off"):
        plan([seg], [resolve(("pair",), 6, REFTS)])


def test_cache_salts_keep_different_edits_apart_and_equal_ones_together():
    lo, fl, every, pair = REFTS["lo"], REFTS["fl"], REFTS["every"], REFTS["pair"]
    assert cache_salt([], 5) is None
    assert cache_salt([every], 5) == cache_salt([every], 9)  # edits every token: length does not matter
    assert cache_salt([lo], 5) == cache_salt([lo], 5)
    assert cache_salt([lo], 5) != cache_salt([lo], 6)  # l1 is another token at another length
    assert cache_salt([lo, fl], 5) != cache_salt([fl, lo], 5)  # order matters
    assert cache_salt([lo], 5) != cache_salt([every], 5)
    assert cache_salt([pair], 6) != cache_salt([pair], 6)  # groups never share a prefix


def test_the_plugin_refuses_a_compiled_forward_and_reads_routes_in_order():
    """Without vLLM: the plugin's checks at model load (a fake runner), and how it reads a request's ReFTs."""
    from types import SimpleNamespace

    from reftlab.serve.vllm.plugin import _Steering, route_of

    compiled = SimpleNamespace(vllm_config=SimpleNamespace(compilation_config=SimpleNamespace(mode=3)))
    with pytest.raises(ValueError, match="start vLLM with --enforce-eager"):
        _Steering.build(compiled, {"refts": {}})
    with pytest.raises(ValueError, match="must be"):
        _Steering.build(compiled, {"refts": "lo"})
    assert route_of(SimpleNamespace(extra_args={"reftlab": ["b", "a"]})) == ("b", "a")
    assert route_of(SimpleNamespace(extra_args={"reftlab": "lo"})) == ("lo",)
    assert route_of(SimpleNamespace(extra_args=None)) == ()


def test_checkpoints_vllm_cannot_serve_are_refused_by_name(tmp_path, capsys):
    """Without vLLM: what ``load_served`` refuses (another base, a site inside a block, no positions,
    not a reftlab checkpoint), and the serve options that --engine vllm does not take."""
    from reftlab.cli import main
    from reftlab.serve.vllm.load import load_served

    hooked = reftlab.load_model(reftlab.tiny_llama(), reftlab.tiny_tokenizer())
    config = hooked.hf_model.config

    def saved(name, **rep):
        spec = {"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2, **rep}
        return reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[spec])).save(tmp_path / name)

    good = load_served("ok", saved("ok", positions="f1+l1"), config)
    assert [(s.layer, str(s.positions), s.hook) for s in good.sites] == [(1, "f1+l1", "blocks.1.hook_resid_post")]
    assert str(load_served("ok", tmp_path / "ok", config, positions=["l2"]).sites[0].positions) == "l2"
    other = type(config)(**{**config.to_dict(), "num_hidden_layers": config.num_hidden_layers + 1})
    with pytest.raises(ValueError, match="'ok' was trained on .* serve it on its own base"):
        load_served("ok", tmp_path / "ok", other)
    with pytest.raises(ValueError, match="serve this one with --engine reftlab"):
        load_served("mlp", saved("mlp", positions="l1", component="mlp_output"), config)
    with pytest.raises(ValueError, match="give them, e.g. --positions l1"):
        load_served("none", saved("none"), config)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a reftlab checkpoint"):
        load_served("empty", tmp_path / "empty", config)
    for flag in (["--device", "cuda:1"], ["--strict"]):
        assert main(["serve", "--engine", "vllm", *flag]) == 2
        assert f"{flag[0]}: not for --engine vllm" in capsys.readouterr().err
