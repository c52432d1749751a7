"""docs/scale.md: the memory table is reftlab.train.memory's, and the CPU example runs as written."""

import contextlib
import io
import re

import pytest
from helpers import REPO

from reftlab.train.memory import NF4_BITS, footprint, llama_params, scale_table

DOC = REPO / "docs" / "scale.md"


def test_the_memory_table_is_computed():
    assert scale_table() in DOC.read_text()
    # The arithmetic behind it: Llama-2's published sizes, LoReFT's 2dr + r, nf4's 4.127 bits.
    assert llama_params(4096, 32, 11008, 32000) == 6_738_415_616
    assert llama_params(8192, 80, 28672, 32000, kv_dim=1024) == 68_976_648_192
    f = footprint(1000, d_model=10, rank=2, bits=NF4_BITS, params_16bit=200, n_interventions=3, shards=2)
    assert f.intervention_params == 3 * (2 * 10 * 2 + 2) and f.training_state_bytes == 16 * 126
    assert f.base_bytes == pytest.approx(800 * 4.126953125 / 8 + 400) and f.base_bytes_per_gpu == f.base_bytes / 2
    with pytest.raises(ValueError, match="must be >= 1"):
        footprint(10, d_model=4, rank=0)


def test_the_cpu_example_runs():
    pytest.importorskip("torchao")
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(DOC), "exec"), {})
    assert out.getvalue().split("\n")[:2] == ["3 cpu", "3 cpu"]
