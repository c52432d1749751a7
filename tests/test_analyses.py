"""analyses/: the end-to-end scripts run (quick mode) and write their results and figures."""

import json
import subprocess
import sys

from helpers import REPO


def test_sentiment_layers_quick_writes_results_and_a_report(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(REPO / "analyses" / "sentiment_layers.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert [r["layer"] for r in result["layers"]] == [0, 2]
    assert result["best_layer"] in (0, 2)
    for row in result["layers"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["angle_r_vs_mean_diff"] <= 90.0
        assert row["d_prime_after"] >= 0.0 and row["mean_edit_norm"] > 0.0
    page = (out / "report.html").read_text()
    assert page.count('id="reftlab-fig-') == 5
    assert (out / "layers.csv").read_text().startswith("layer,accuracy,")
