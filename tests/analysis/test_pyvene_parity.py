"""pyvene parity: VanillaIntervention and RotatedSpaceIntervention give pyvene 0.1.8's logits on the
same model, inputs and positions (pyvene runs in the pyreft venv, as tests/io/test_pyreft.py runs pyreft)."""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import FIXTURES, REPO
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import reftlab
from reftlab.interventions import RotatedSpaceIntervention, VanillaIntervention

PYREFT_VENV = Path(os.environ.get("PYREFT_VENV", REPO / ".venv-pyreft"))
MODEL = FIXTURES / "pyreft" / "model"


def test_vanilla_and_rotated_match_pyvene(tmp_path):
    if not (PYREFT_VENV / ".complete").is_file():
        if os.environ.get("CI") or os.environ.get("REFTLAB_REQUIRE_PYREFT"):
            pytest.fail(f"pyreft's venv (with pyvene) is missing at {PYREFT_VENV}: make pyreft-venv")
        pytest.skip(f"pyreft's venv is not built at {PYREFT_VENV} (make pyreft-venv)")
    base_model = AutoModelForCausalLM.from_pretrained(MODEL).eval()
    d = base_model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    base, src = torch.randint(0, 200, (2, 7), generator=g), torch.randint(0, 200, (2, 7), generator=g)
    src_pos, base_pos = [[2], [5]], [[3], [1]]
    W = torch.linalg.qr(torch.randn(d, d, generator=g))[0].contiguous()  # orthogonal; pyvene rotates by x @ W
    save_file({"W": W}, str(tmp_path / "rot.safetensors"))
    spec = {
        "base": base.tolist(),
        "source": src.tolist(),
        "source_positions": src_pos,
        "base_positions": base_pos,
        "layer": 1,
        "rotation": str(tmp_path / "rot.safetensors"),
    }
    (tmp_path / "in.json").write_text(json.dumps(spec))
    res = subprocess.run(
        [str(PYREFT_VENV / "bin" / "python"), str(REPO / "tests/fixtures/pyvene/interchange.py"), str(MODEL),
         str(tmp_path / "in.json"), str(tmp_path / "out.safetensors")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    theirs = load_file(str(tmp_path / "out.safetensors"))

    def ours(iv):
        rm = reftlab.get_reft_model(
            base_model,
            reftlab.ReftConfig(representations={"layer": 1, "component": "block_output", "intervention": iv}),
        )
        with torch.no_grad():
            _, out = rm(
                {"input_ids": base},
                sources=[{"input_ids": src}],
                unit_locations={"sources->base": ([src_pos], [base_pos])},
            )
        return out.logits

    torch.testing.assert_close(ours(VanillaIntervention(embed_dim=d)), theirs["vanilla"], atol=1e-5, rtol=1e-5)
    for k, name in ((3, "rotated_3"), (d, "rotated_d")):
        iv = RotatedSpaceIntervention(embed_dim=d, interchange_dim=k)
        with torch.no_grad():
            iv.rotation.copy_(W.T)  # reftlab's R has the rotated coordinates as rows: R = W^T
        torch.testing.assert_close(ours(iv), theirs[name], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(theirs["rotated_3"], theirs["vanilla"], atol=1e-4)  # k = 3 is a partial patch
