"""benchmarks/concepts.py on a tiny model: both sides agree, the ratio, the sink ratio and the table print."""

import importlib.util
import json

from helpers import REPO

import reftlab


def test_the_benchmark_runs_and_prints_its_json(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as when the script runs: its folder on sys.path
    model_dir = tmp_path / "tiny"
    reftlab.tiny_llama(seed=0).save_pretrained(model_dir)
    reftlab.tiny_tokenizer().save_pretrained(model_dir)
    spec = importlib.util.spec_from_file_location("bench_concepts", REPO / "benchmarks" / "concepts.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--model", str(model_dir), "--repeats", "1", "--max-texts", "32"])
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["speedup_vs_hf_hidden_states"] > 0 and result["texts"] == 32 and result["layer"] == 2
    assert result["sink_norm_ratio"] > 0
    assert "food and cooking" in out and "auroc_hard" in out
