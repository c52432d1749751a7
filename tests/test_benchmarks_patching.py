"""benchmarks/patching.py on a tiny model: the three sweeps agree and the script prints its JSON line."""

import importlib.util
import json

from helpers import REPO


def test_patching_benchmark_sweeps_agree(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_patching", REPO / "benchmarks" / "patching.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--model", "tiny", "--seq", "5", "--layer-step", "2", "--repeats", "1", "--atol", "1e-5"])
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["layers"] == 2 and result["positions"] == 5 and result["max_abs_diff"] <= 1e-5
    assert result["naive_hf_vs_reftlab"] > 0 and result["naive_tl_vs_reftlab"] > 0
