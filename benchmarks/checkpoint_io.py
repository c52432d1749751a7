"""Save/load time and size of a single-layer rank-4 LoReFT checkpoint, against pyreft's layout.

Native: ``reft_model.save(dir)`` / ``ReftModel.load(dir, model)`` (JSON + safetensors, the
fingerprint check included). Baseline, in the same run: the same interventions written in
pyreft 0.1.0's layout (``format="pyreft"``, pickled ``.bin``) and a DiReFT in that layout
(pyreft stores a d x d ``base`` buffer for it). Repeats are interleaved; medians reported.
The last line is JSON.

    python benchmarks/checkpoint_io.py [--model smollm2-135m-instruct] [--repeats 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import reftlab


def folder_bytes(folder: Path, suffixes: tuple[str, ...] = (".json", ".safetensors", ".bin")) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in suffixes)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def reft(model, kind: str):
    cfg = reftlab.ReftConfig(
        representations={
            "layer": 15,
            "component": "block_output",
            "positions": "l1",
            "intervention": {"kind": kind, "rank": 4},
        }
    )
    return reftlab.get_reft_model(model, cfg)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    model = reftlab.load_model(args.model, dtype="float32")
    rm, direft = reft(model, "loreft"), reft(model, "direft")
    tmp = Path(tempfile.mkdtemp())
    times: dict[str, list[float]] = {"save": [], "load": [], "save_pyreft": [], "load_pyreft": []}
    for _i in range(args.repeats):
        times["save"].append(timed(lambda: rm.save(tmp / "native")))
        times["load"].append(timed(lambda: reftlab.ReftModel.load(tmp / "native", model)))
        times["save_pyreft"].append(timed(lambda: rm.save(tmp / "pyreft", format="pyreft")))
        times["load_pyreft"].append(timed(lambda: reftlab.ReftModel.load(tmp / "pyreft", model)))
    direft.save(tmp / "direft_pyreft", format="pyreft")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:>12}: median {v * 1000:7.1f} ms over {args.repeats} (min {min(times[k]) * 1000:.1f})")
    weights = (tmp / "native" / "interventions.safetensors").stat().st_size
    native = folder_bytes(tmp / "native")
    sizes = {
        "native_weights_bytes": weights,
        "native_bytes": native,
        "pyreft_layout_bytes": folder_bytes(tmp / "pyreft"),
        "pyreft_layout_direft_bytes": folder_bytes(tmp / "direft_pyreft"),
        "params": rm.num_intervention_parameters(),
        "params_x_4_bytes": 4 * rm.num_intervention_parameters(),
    }
    for k, v in sizes.items():
        print(f"{k:>28}: {v:,}")
    result = {
        "save_ms": round(med["save"] * 1000, 2),
        "load_ms": round(med["load"] * 1000, 2),
        "save_ratio_vs_pyreft_layout": round(med["save"] / med["save_pyreft"], 3),
        "load_ratio_vs_pyreft_layout": round(med["load"] / med["load_pyreft"], 3),
        **sizes,
        "size_ratio_vs_pyreft_direft": round(native / sizes["pyreft_layout_direft_bytes"], 4),
        "model": args.model,
        "dtype": "float32",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
