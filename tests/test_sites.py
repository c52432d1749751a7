import json

import pytest
import torch

from reftlab.sites import COMPONENTS, Positions, Site, resolve_positions


def test_positions_parse_and_print_round_trip():
    for text in ["l1", "f1", "f3+l3", "f7+l7", "all"]:
        assert str(Positions.parse(text)) == text
    assert Positions.parse("f3+l3") == Positions(first=3, last=3)


@pytest.mark.parametrize("bad", ["", "x3", "f3+", "l-1", "f0"])
def test_bad_positions_are_rejected(bad):
    with pytest.raises(ValueError):
        Positions.parse(bad)


def test_site_from_pyreft_components_and_json():
    for comp, suffix in COMPONENTS.items():
        s = Site.from_pyreft(layer=2, component=comp, positions="f1+l1")
        assert s.hook == f"blocks.2.{suffix}" and s.layer == 2 and s.component == comp
        again = Site.from_json(json.loads(json.dumps(s.to_json())))
        assert again == s and hash(again) == hash(s)


def test_unknown_component_lists_valid_ones():
    with pytest.raises(ValueError, match="component='block_outptu'.*block_output"):
        Site.from_pyreft(layer=1, component="block_outptu")


def test_f3_l3_under_left_and_right_padding_select_the_same_tokens():
    # Two prompts of lengths 2 and 7 padded to 8, once left and once right.
    lengths = [2, 7]
    T = 8
    tokens = [torch.arange(100, 100 + n) for n in lengths]
    right = torch.zeros(2, T, dtype=torch.long)
    left = torch.zeros(2, T, dtype=torch.long)
    rmask, lmask = torch.zeros(2, T, dtype=torch.long), torch.zeros(2, T, dtype=torch.long)
    for i, t in enumerate(tokens):
        right[i, : len(t)], rmask[i, : len(t)] = t, 1
        left[i, T - len(t) :], lmask[i, T - len(t) :] = t, 1
    for ids, mask in [(right, rmask), (left, lmask)]:
        idx = resolve_positions("f3+l3", mask)
        picked = [[int(ids[i, j]) if j >= 0 else None for j in row] for i, row in enumerate(idx.tolist())]
        assert picked[0] == [100, 101, None, None, 100, 101]
        assert picked[1] == [100, 101, 102, 104, 105, 106]
        assert resolve_positions("l1", mask).shape == (2, 1)
        last = resolve_positions("l1", mask)[:, 0]
        assert [int(ids[i, j]) for i, j in enumerate(last)] == [101, 106]


def test_prompt_lengths_bound_positions_to_the_prompt():
    mask = torch.ones(2, 6, dtype=torch.long)
    assert resolve_positions("l1", mask, prompt_lengths=[3, 5]).tolist() == [[2], [4]]
    with pytest.raises(ValueError, match="example 0: prompt length 9"):
        resolve_positions("l1", mask, prompt_lengths=[9, 5])


def test_all_positions_respect_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    assert resolve_positions("all", mask).tolist() == [[2, 3, -1, -1], [0, 1, 2, -1]]
