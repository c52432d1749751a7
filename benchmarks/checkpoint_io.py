"""Checkpoint save/load time and size, native format against pyreft 0.1.0's layout, kind by kind.

For each kind (a single-layer rank-4 LoReFT and DiReFT on SmolLM2's layer 15), the same
ReftModel is written both ways and read back both ways, so each ratio compares the same
kind and the same work:

- ``save``: ``reft_model.save(dir)`` vs ``save(dir, format="pyreft")``: both compute the base
  model's fingerprint and write a model card; they differ in the weight files only
  (safetensors + JSON vs pickled ``.bin`` + pyreft's ``config.json``);
- ``read``: reading a folder into interventions on the model's device, without the base-model
  check (``read_native`` + ``build_interventions`` vs ``read_pyreft``);
- ``load``: ``ReftModel.load(dir, model)`` for both; the native one also checks the base model
  (architecture, hooks, config/weight fingerprints), which pyreft's layout cannot: its extra
  cost is ``fingerprint`` (``identify(model)``), timed alone;
- sizes: the weight and config files of each folder (the model card excluded).

Repeats are interleaved (``benchmarks/timing.py``); medians reported; the last line is JSON.

    python benchmarks/checkpoint_io.py [--model smollm2-135m-instruct] [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from timing import interleaved  # benchmarks/timing.py (the script's folder is on sys.path)

import reftlab
from reftlab.io.checkpoint import build_interventions, read_native
from reftlab.io.fingerprint import identify
from reftlab.io.pyreft_format import read_pyreft

KINDS = ("loreft", "direft")


def folder_bytes(folder: Path, suffixes: tuple[str, ...] = (".json", ".safetensors", ".bin")) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in suffixes)


def reft(model, kind: str) -> reftlab.ReftModel:
    cfg = reftlab.ReftConfig(
        representations={
            "layer": model.n_layers // 2,  # 15 on SmolLM2's 30
            "component": "block_output",
            "positions": "l1",
            "intervention": {"kind": kind, "rank": 4},
        }
    )
    return reftlab.get_reft_model(model, cfg)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct", help="a model name or local HF folder")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args(argv)
    print(f"torch threads: {torch.get_num_threads()}")
    model = reftlab.load_model(args.model, dtype="float32")
    tmp = Path(tempfile.mkdtemp())
    runs = {"fingerprint": lambda: identify(model)}
    for kind in KINDS:
        rm = reft(model, kind)
        native, pyreft = tmp / f"{kind}_native", tmp / f"{kind}_pyreft"
        runs[f"{kind}.save.native"] = lambda rm=rm, d=native: rm.save(d)
        runs[f"{kind}.save.pyreft"] = lambda rm=rm, d=pyreft: rm.save(d, format="pyreft")
        runs[f"{kind}.read.native"] = lambda d=native: build_interventions(
            read_native(d), model_dtype=model.dtype, device=model.device
        )
        runs[f"{kind}.read.pyreft"] = lambda d=pyreft: [iv.to(model.device) for iv in read_pyreft(d).interventions]
        runs[f"{kind}.load.native"] = lambda d=native: reftlab.ReftModel.load(d, model)
        runs[f"{kind}.load.pyreft"] = lambda d=pyreft: reftlab.ReftModel.load(d, model)
    med, times = interleaved(runs, args.repeats)  # the warm-up round writes the folders the reads need
    for k, v in med.items():
        print(f"{k:>20}: median {v * 1000:7.2f} ms over {args.repeats} (min {min(times[k]) * 1000:.2f})")
    result: dict[str, object] = {"fingerprint_ms": round(med["fingerprint"] * 1000, 2)}
    for kind in KINDS:
        native, pyreft = folder_bytes(tmp / f"{kind}_native"), folder_bytes(tmp / f"{kind}_pyreft")
        params = reft(model, kind).num_intervention_parameters()
        print(
            f"{kind:>8}: {params:,} params ({4 * params:,} bytes in fp32); native {native:,} bytes, pyreft layout {pyreft:,}"
        )
        for op in ("save", "read", "load"):
            result[f"{kind}_{op}_ms"] = round(med[f"{kind}.{op}.native"] * 1000, 2)
            result[f"{kind}_{op}_ratio_vs_pyreft_layout"] = round(
                med[f"{kind}.{op}.native"] / med[f"{kind}.{op}.pyreft"], 3
            )
        result[f"{kind}_size_ratio_vs_pyreft_layout"] = round(native / pyreft, 4)
        result[f"{kind}_native_bytes"] = native
        result[f"{kind}_pyreft_layout_bytes"] = pyreft
    result.update(
        {"model": args.model, "dtype": "float32", "threads": torch.get_num_threads(), "repeats": args.repeats}
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
