"""pyreft interop: checkpoints written by pyreft 0.1.0 itself load with pyreft's outputs, and exports load back.

The fixtures come from ``tests/fixtures/pyreft/make_fixtures.sh`` (pyreft 0.1.0 in its own venv).
``make test`` builds that venv (``make pyreft-venv``: ``.venv-pyreft``), so pyreft itself reads
reftlab's exports in CI; elsewhere the test skips without it.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, REPO
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import reftlab
from reftlab.interventions import Sourced, intervention_class, kinds
from reftlab.io import read_pyreft

FIX = FIXTURES / "pyreft"
REF = json.loads((FIX / "reference.json").read_text())
LOGITS = load_file(str(FIX / "reference.safetensors"))
CHECKPOINTS = sorted(p.name.removeprefix("ckpt_") for p in FIX.glob("ckpt_*"))
PYREFT_VENV = Path(os.environ.get("PYREFT_VENV", REPO / ".venv-pyreft"))


@pytest.fixture(scope="module")
def base():
    return AutoModelForCausalLM.from_pretrained(FIX / "model").eval()


def test_fixture_model_is_the_one_pyreft_ran(base):
    with torch.no_grad():
        logits = base(torch.tensor(REF["inputs"])).logits
    torch.testing.assert_close(logits, LOGITS["logits.base"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_pyreft_checkpoint_reproduces_pyreft_logits_and_generation(base, name):
    rm = reftlab.ReftModel.load(FIX / f"ckpt_{name}", base)
    n = len(rm.interventions)
    ids = torch.tensor(REF["inputs"])
    with torch.no_grad():
        _, out = rm(
            {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
            unit_locations={"sources->base": (None, [REF["positions"]] * n)},
        )
    torch.testing.assert_close(out.logits, LOGITS[f"logits.{name}"], atol=2e-5, rtol=1e-4)
    assert not torch.allclose(out.logits, LOGITS["logits.base"], atol=1e-3)  # the intervention matters
    prompt = torch.tensor(REF["prompt"])
    with torch.no_grad():
        _, gen = rm.generate(
            {"input_ids": prompt, "attention_mask": torch.ones_like(prompt)},
            unit_locations={"sources->base": (None, [REF["gen_positions"]] * n)},
            intervene_on_prompt=True,
            max_new_tokens=REF["max_new_tokens"],
            do_sample=False,
            pad_token_id=256,
        )
    assert gen[0].tolist() == REF["generations"][name]


def test_imports_map_pyreft_classes_to_kinds_and_sites():
    assert [iv.kind for iv in read_pyreft(FIX / "ckpt_noreft").interventions] == ["noreft"]
    imported = read_pyreft(FIX / "ckpt_loreft_two")
    assert [r.site.hook for r in imported.config.representations] == [
        "blocks.1.hook_resid_post",
        "blocks.3.hook_resid_post",
    ]
    assert read_pyreft(FIX / "ckpt_loreft_string").config.representations[0].site.hook == "model.layers[1].output"


def test_pyreft_class_paths_are_matched_never_imported(tmp_path):
    import shutil

    shutil.copytree(FIX / "ckpt_loreft", tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    cfg["intervention_types"] = ["<class 'os.system'>"]
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="pyreft intervention type .*os.system.* is not supported"):
        read_pyreft(tmp_path / "c")


def test_pyreft_checkpoint_on_a_wrong_model_is_refused():
    with pytest.raises(ValueError, match="d_model=64, but this model has d_model=32"):
        reftlab.ReftModel.load(FIX / "ckpt_lobireft", reftlab.tiny_llama(d_model=32))


PYREFT_HAS = ["consreft", "direft", "lobireft", "loreft", "nodireft", "noreft"]


def test_composite_kinds_are_refused_by_the_pyreft_layout(base, tmp_path):
    causal = {k for k in kinds() if issubclass(intervention_class(k), Sourced)}  # pyvene's kinds, not pyreft's
    assert set(kinds()) - set(PYREFT_HAS) - causal == {"concat_loreft", "simgate", "sum"}
    cfg = reftlab.ReftConfig(
        representations={
            "layer": 1,
            "component": "block_output",
            "intervention": {
                "kind": "sum",
                "children": [{"kind": "loreft", "rank": 2}, {"kind": "lobireft", "rank": 2}],
            },
        }
    )
    with pytest.raises(ValueError, match="'sum', which pyreft has no class for"):
        reftlab.get_reft_model(base, cfg).save(tmp_path / "p", format="pyreft")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("kind", PYREFT_HAS)
def test_export_to_pyreft_layout_loads_back(base, tmp_path, kind):
    cfg = reftlab.ReftConfig(
        representations=[
            {"layer": 1, "component": "block_output", "intervention": {"kind": kind, "rank": 4}},
            {"layer": 2, "component": "mlp_output", "intervention": {"kind": kind, "rank": 2}},
        ]
    )
    rm = reftlab.get_reft_model(base, cfg)
    with torch.no_grad():
        for p in rm.interventions.parameters():
            p.add_(0.3 * torch.randn_like(p))
    rm.save(tmp_path / "p", format="pyreft")
    names = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert names == [
        "README.md",
        "config.json",
        "intkey_layer_1_comp_block_output_unit_pos_nunit_1#0.bin",
        "intkey_layer_2_comp_mlp_output_unit_pos_nunit_1#0.bin",
    ]
    # the same tensor names as pyreft's own checkpoint of that kind
    ours = torch.load(tmp_path / "p" / names[2], weights_only=True)
    theirs = torch.load(next((FIX / f"ckpt_{kind}").glob("intkey_*.bin")), weights_only=True)
    assert sorted(ours) == sorted(theirs)
    loaded = reftlab.ReftModel.load(tmp_path / "p", base)
    ids = torch.tensor(REF["inputs"])
    with torch.no_grad():
        a = rm.run(ids, positions="f2+l2").logits
        b = loaded.run(ids, positions="f2+l2").logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_pyreft_itself_loads_the_export(base, tmp_path):
    """pyreft 0.1.0 loads each exported kind it can reload and computes reftlab's logits.

    NoReFT and NodiReFT are left out: pyreft rebuilds an intervention from its saved
    representation fields only, which lack their required ``add_bias`` argument, so pyreft
    cannot reload even its own checkpoints of them (``KeyError: 'add_bias'``).
    """
    if not (PYREFT_VENV / ".complete").is_file():
        if os.environ.get("CI") or os.environ.get("REFTLAB_REQUIRE_PYREFT"):  # make test sets it
            pytest.fail(f"pyreft's venv is missing at {PYREFT_VENV}: `make test` builds it (make pyreft-venv)")
        pytest.skip(f"pyreft's venv is not built at {PYREFT_VENV} (make pyreft-venv)")
    ivs = []
    for kind in ("loreft", "direft", "consreft", "lobireft"):
        cfg = reftlab.ReftConfig(
            representations={"layer": 2, "component": "block_output", "intervention": {"kind": kind, "rank": 4}}
        )
        rm = reftlab.get_reft_model(base, cfg)
        rm.save(tmp_path / kind, format="pyreft")
        ids = torch.tensor(REF["inputs"])
        with torch.no_grad():
            logits = rm.run(ids, positions=torch.tensor(REF["positions"])).logits
        torch.save(logits, tmp_path / kind / "expected.pt")
        ivs.append(kind)
    script = FIX / "check_export.py"
    res = subprocess.run(
        [str(PYREFT_VENV / "bin" / "python"), str(script), str(FIX / "model"), *[str(tmp_path / k) for k in ivs]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert res.stdout.count("OK") == len(ivs), res.stdout
