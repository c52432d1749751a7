import pytest

import reftlab
from reftlab import ReftConfig


def pyreft_style(**over):
    rep = {
        "layer": 1,
        "component": "block_output",
        "low_rank_dimension": 4,
        "intervention": reftlab.LoreftIntervention(embed_dim=64, low_rank_dimension=4),
    }
    rep.update(over)
    return rep


def test_pyreft_dict_and_list_forms(tiny_hooked):
    one = ReftConfig(representations=pyreft_style())
    two = ReftConfig(
        representations=[
            pyreft_style(),
            {
                "hook": "blocks.2.hook_mlp_out",
                "positions": "f1+l1",
                "intervention": {"kind": "direft", "rank": 2, "act": "relu"},
            },
        ]
    )
    assert len(one.representations) == 1 and len(two.representations) == 2
    assert two.representations[1].site.positions == reftlab.Positions(first=1, last=1)
    rm = reftlab.get_reft_model(tiny_hooked, two)
    assert [iv.kind for iv in rm.interventions.values()] == ["loreft", "direft"]


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_file_round_trip(tmp_path, suffix):
    cfg = ReftConfig(
        representations=[
            {"layer": 3, "component": "mlp_output", "positions": "f3+l3", "kind": "noreft", "rank": 2},
            pyreft_style(),
        ]
    )
    path = tmp_path / f"cfg{suffix}"
    cfg.to_file(path)
    again = ReftConfig.from_file(path)
    assert again.to_json() == cfg.to_json()
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    "rep, message",
    [
        (pyreft_style(component="block_outptu"), r"component='block_outptu'.*block_output"),
        (pyreft_style(layer=9), r"layer=9 is out of range; this model has layers 0..3"),
        ({"layer": 1, "component": "block_output", "kind": "loreft", "rank": 65}, r"rank/low_rank_dimension=65"),
        (
            {"layer": 1, "component": "block_output", "kind": "lorft", "rank": 4},
            r"unknown intervention kind 'lorft'.*loreft",
        ),
        (
            pyreft_style(intervention=reftlab.LoreftIntervention(embed_dim=32, low_rank_dimension=4)),
            r"embed_dim/d_model=32 != the model's d_model=64",
        ),
        (pyreft_style(colour="red"), r"unknown key\(s\) \['colour'\] in representations\[0\]"),
        (
            {"hook": "blocks.1.hook_nowhere", "kind": "loreft", "rank": 2},
            r"hook='blocks.1.hook_nowhere' is not a hook point",
        ),
    ],
)
def test_validation_errors_name_field_value_and_fix(tiny_hooked, rep, message):
    with pytest.raises(ValueError, match=message):
        reftlab.get_reft_model(tiny_hooked, ReftConfig(representations=rep))


def test_unknown_top_level_key_in_file(tmp_path):
    (tmp_path / "c.json").write_text('{"representations": [], "lr": 1}')
    with pytest.raises(ValueError, match=r"unknown ReftConfig keys \['lr'\]"):
        ReftConfig.from_file(tmp_path / "c.json")
