"""``reftlab concepts fit``: every output written, a trained ReFT's subspace read too, clear errors."""

import json

import pandas as pd
import pytest
from helpers import REPO

import reftlab
from reftlab.cli import main
from reftlab.concepts import load_directions

EXAMPLES = REPO / "examples" / "concepts"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    reftlab.tiny_llama(seed=1).save_pretrained(folder)
    reftlab.tiny_tokenizer().save_pretrained(folder)
    return folder


def test_fit_writes_directions_tables_and_the_report(base, tmp_path):
    reft = reftlab.get_reft_model(
        reftlab.load_model(base),
        reftlab.ReftConfig(
            representations={"layer": 1, "component": "block_output", "positions": "l1", "kind": "loreft", "rank": 2}
        ),
    )
    reft.save(tmp_path / "lo")
    out = tmp_path / "out"
    # No --model: the base is the one the --reft checkpoint records (the tiny folder).
    rc = main(
        [
            "concepts", "fit", str(EXAMPLES / "train.csv"), "--eval", str(EXAMPLES / "eval.csv"),
            "--layer", "1", "--methods", "diffmean,probe,reft_r1", "--r1-max-steps", "1",
            "--reft", str(tmp_path / "lo"), "--alphas", "1,4", "--n-prompts", "4", "--max-new-tokens", "3",
            "--steer-methods", "diffmean", "--no-progress", "-o", str(out),
        ]
    )  # fmt: skip
    assert rc == 0
    assert {p.name for p in out.iterdir()} >= {"directions", "results.csv", "steering.csv", "report.html"}
    meta = json.loads((out / "directions" / "directions.json").read_text())
    assert meta["format"] == "reftlab-concept-directions" and len(meta["directions"]) == 16
    assert len(load_directions(out / "directions", model=reftlab.load_model(base))) == 16
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns[:4]) == ["concept", "method", "auroc", "auroc_hard"]
    assert set(results.method) == {"diffmean", "probe", "reft_r1", "subspace:lo"}
    steering = pd.read_csv(out / "steering.csv")
    assert set(steering.method) == {"diffmean"} and set(steering.judge) == {"probe"}
    assert "reftlab-fig-3" in (out / "report.html").read_text()
    # The dashboard of the ReFT links to the concept report.
    (tmp_path / "prompts.txt").write_text("hello there\nok then\n")
    dash = tmp_path / "dash.html"
    args = ["dashboard", str(tmp_path / "lo"), "--prompts", str(tmp_path / "prompts.txt"), "-o", str(dash)]
    assert main([*args, "--model", str(base), "--concept-report", str(out / "report.html")]) == 0
    assert 'href="out/report.html"' in dash.read_text()


def test_bad_input_exits_2_with_one_line(base, tmp_path, capsys):
    args = ["concepts", "fit", str(tmp_path / "none.csv"), "--layer", "1", "-o", str(tmp_path / "o")]
    assert main(args) == 2
    assert "no data file" in capsys.readouterr().err
    assert main(["concepts", "fit", str(EXAMPLES / "train.csv"), "--layer", "1", "--methods", "lda", "-o", "x"]) == 2
    assert "unknown" in capsys.readouterr().err
    bad = ["concepts", "fit", str(EXAMPLES / "train.csv"), "--model", str(base), "--layer", "1"]
    assert main([*bad, "--alphas", "1,x", "-o", str(tmp_path / "o")]) == 2
    assert "--alphas" in capsys.readouterr().err
    assert main([*bad, "--reft", str(tmp_path), "--no-steer", "-o", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
