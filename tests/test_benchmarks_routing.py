"""benchmarks/routing.py and benchmarks/checkpoint_io.py on a tiny model: they run, compare like with
like (the same prompts per ReFT in the mixed and the sequential run; the same kinds both ways) and print
their thread count and a JSON line."""

import importlib.util
import json

import pytest
import torch
from helpers import REPO

import reftlab


def _bench(name, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as when the script runs: its folder on sys.path
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_routing_benchmark_gives_each_reft_the_same_prompts_in_both_runs(monkeypatch, capsys):
    mod = _bench("routing", monkeypatch)
    mod.main(["--model", "tiny", "--repeats", "1", "--new-tokens", "4", "--seq", "8", "--device", "cpu"])
    out = capsys.readouterr().out
    result = _last_json(out)
    threads = torch.get_num_threads()
    assert f"torch threads: {threads}; 2 prompts per ReFT in the mixed and the sequential run" in out
    assert "mixed vs sequential: same shape (8, 12)" in out  # the same work: 8 prompts, 8 + 4 tokens each
    assert result["prompts_per_reft"] == 2 and result["batch"] == 8 and result["threads"] == threads
    assert result["mixed_vs_single"] > 0 and result["mixed_vs_sequential"] > 0
    assert result["greedy_tokens_agree_mixed_vs_sequential"] >= 0.9
    with pytest.raises(SystemExit, match="must be a multiple of 4 \\(the same prompts per ReFT\\)"):
        mod.main(["--model", "tiny", "--batch", "6", "--device", "cpu"])


def test_checkpoint_io_benchmark_times_each_kind_both_ways(tmp_path, monkeypatch, capsys):
    model = tmp_path / "tiny"
    reftlab.tiny_llama(seed=0).save_pretrained(model)
    reftlab.tiny_tokenizer().save_pretrained(model)
    _bench("checkpoint_io", monkeypatch).main(["--model", str(model), "--repeats", "1"])
    out = capsys.readouterr().out
    result = _last_json(out)
    assert out.startswith(f"torch threads: {torch.get_num_threads()}") and result["threads"] > 0
    for kind in ("loreft", "direft"):
        for op in ("save", "read", "load"):
            assert f"{kind}.{op}.native" in out and f"{kind}.{op}.pyreft" in out
            assert result[f"{kind}_{op}_ratio_vs_pyreft_layout"] > 0
        assert result[f"{kind}_native_bytes"] > 0 and result[f"{kind}_pyreft_layout_bytes"] > 0
    assert result["fingerprint_ms"] > 0
