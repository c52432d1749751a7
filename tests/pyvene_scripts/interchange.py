"""Run by tests/analysis/test_pyvene_parity.py with pyvene 0.1.8's venv (not collected by pytest).

argv: model folder, inputs.json (base, source, positions, rotation file), output safetensors.
Writes pyvene's logits for VanillaIntervention and RotatedSpaceIntervention (k = 3 and k = d).
"""

import json
import sys
from pathlib import Path

import pyvene as pv
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

model_dir, inputs, out_path = sys.argv[1:4]
spec = json.loads(Path(inputs).read_text())
model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
base, src = torch.tensor(spec["base"]), torch.tensor(spec["source"])
locs = {"sources->base": ([spec["source_positions"]], [spec["base_positions"]])}
W = load_file(spec["rotation"])["W"]  # pyvene's rotate_layer.weight: x @ W rotates


def run(kind, k=None):
    cfg = pv.IntervenableConfig(
        representations=[
            {"layer": spec["layer"], "component": "block_output", "unit": "pos", "max_number_of_units": 1}
        ],
        intervention_types=kind,
    )
    im = pv.IntervenableModel(cfg, model)
    iv = next(iter(im.interventions.values()))
    iv = iv[0] if isinstance(iv, tuple) else iv
    if k is not None:
        iv.rotate_layer.weight = W
        assert torch.allclose(iv.rotate_layer.weight, W, atol=1e-6)
        iv.set_interchange_dim(k)
    with torch.no_grad():
        _, out = im({"input_ids": base}, [{"input_ids": src}], locs)
    return out.logits.contiguous()


save_file(
    {
        "vanilla": run(pv.VanillaIntervention),
        "rotated_3": run(pv.RotatedSpaceIntervention, 3),
        "rotated_d": run(pv.RotatedSpaceIntervention, W.shape[0]),
    },
    out_path,
)
print("OK")
