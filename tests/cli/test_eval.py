"""``reftlab eval``'s positions: a checkpoint saved without them (pyreft's way) takes --positions."""

import json

import torch

import reftlab
from reftlab.cli import main

WORDS = ["cat", "dog", "sun", "sky"]


def test_eval_takes_positions_for_a_checkpoint_saved_without_them(tmp_path, capsys):
    base = tmp_path / "tiny"
    reftlab.tiny_llama(seed=0).save_pretrained(base)
    reftlab.tiny_tokenizer().save_pretrained(base)
    hooked = reftlab.load_model(base)
    torch.manual_seed(0)
    rep = {"layer": 1, "component": "block_output", "kind": "loreft", "rank": 2}
    bare = reftlab.get_reft_model(hooked, reftlab.ReftConfig(representations=[rep]))
    with torch.no_grad():
        for p in bare.interventions.parameters():
            p.add_(torch.randn_like(p))
    bare.save(tmp_path / "bare")
    bare.with_positions("f1+l1").save(tmp_path / "saved")
    data = tmp_path / "test.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"say {w}", "response": w}) for w in WORDS))
    args = ["eval", "--data", str(data), "--metric", "loss"]

    assert main([*args[:1], str(tmp_path / "bare"), *args[1:]]) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("reftlab ")]
    assert "has no positions of its own" in err and "--positions l1" in err  # one line (after progress bars)

    assert main([*args[:1], str(tmp_path / "bare"), *args[1:], "--positions", "f1+l1"]) == 0
    out = capsys.readouterr().out.splitlines()
    key = next(iter(bare.interventions))
    assert f"positions: {key}=f1+l1 (given)" in out
    given = json.loads(out[-1])
    assert given["positions"] == {key: "f1+l1"}

    assert main([*args[:1], str(tmp_path / "saved"), *args[1:]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"positions: {key}=f1+l1 (saved)" in out
    saved = json.loads(out[-1])
    assert saved["score"] == given["score"]  # the same edit, given on the command line or saved

    assert main([*args[:1], str(tmp_path / "bare"), *args[1:], "--positions", "l1", "l1", "l1"]) == 2
    assert "--positions gives 3 specs" in capsys.readouterr().err
