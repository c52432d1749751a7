"""``reftlab das CONFIG.yaml`` on the planted model of tests/test_das.py: the pairs come from a file as
text, IIA is reported, and the saved rotation reloads with the same IIA and subspace."""

import json
import math

import pytest
from test_das import pairs, planted

import reftlab
from reftlab import das
from reftlab.cli import main
from reftlab.subspace import principal_angles


def test_das_from_a_config_file_trains_reports_and_saves(tmp_path, capsys):
    hooked, u = planted()
    hooked.hf_model.save_pretrained(tmp_path / "planted")
    hooked.tokenizer.save_pretrained(tmp_path / "planted")
    data = pairs(120, seed=1)
    text = lambda ids: "".join(chr(int(i)) for i in ids)  # noqa: E731 - the tiny tokenizer is one token per byte
    rows = [
        {"base": text(b), "source": text(s), "label": text([y])}
        for b, s, y in zip(data.base_ids, data.source_ids, data.labels)
    ]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    config = tmp_path / "das.yaml"
    config.write_text(
        "model: planted\npairs: pairs.jsonl\nsite: blocks.0.hook_resid_post\nrank: 1\n"
        "steps: 80\nlr: 0.05\nheld_out: 0.25\noutput_dir: out\n"
    )
    assert main(["das", str(config)]) == 0
    assert "IIA 1.000 on held-out pairs" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "das.json").read_text())
    assert report["iia"] >= 0.99 and len(report["losses"]) == 80
    loaded = reftlab.ReftModel.load(tmp_path / "out", reftlab.load_model(tmp_path / "planted"))
    R = next(iter(loaded.interventions.values())).subspace().detach()
    assert math.radians(float(principal_angles(R, u)[0])) < 0.1
    # the file's text tokenizes back to the planted ids, so the reloaded rotation scores the same pairs
    assert das.iia(loaded, data) >= 0.99


@pytest.mark.user_errors
def test_bad_das_configs_name_the_fix(tmp_path, capsys):
    config = tmp_path / "das.yaml"
    config.write_text("pairs: p.jsonl\nsite: blocks.0.hook_resid_post\nrnak: 2\noutput_dir: out\n")
    assert main(["das", str(config)]) == 2
    assert "unknown key(s) ['rnak']" in capsys.readouterr().err
    config.write_text("pairs: p.jsonl\nsite: blocks.0.hook_resid_post\noutput_dir: out\npositions: all\n")
    assert main(["das", str(config)]) == 2
    assert "positions='all' is not a DAS site" in capsys.readouterr().err
    config.write_text("pairs: p.jsonl\nsite: blocks.0.hook_resid_post\noutput_dir: out\nheld_out: 1.5\n")
    assert main(["das", str(config)]) == 2
    assert "held_out=1.5" in capsys.readouterr().err
