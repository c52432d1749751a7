"""The set-up installs from locks/ (pip constraints files), and the locks agree with pyproject.toml.

``make lock`` regenerates both files from the newest versions and runs this suite on them first,
with ``REFTLAB_UNLOCKED=1`` (then the environment is, on purpose, not yet the lock's).
"""

import os
import re
import subprocess
from importlib.metadata import distributions

import pytest
import tomllib
from helpers import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCKS = REPO / "locks"
UNLOCKED = bool(os.environ.get("REFTLAB_UNLOCKED"))
NOT_LOCKED = {"reftlab", "pip", "setuptools", "wheel", "distribute"}  # the project itself and pip's own


def read_lock(name: str) -> dict[str, str]:
    pins = {}
    for line in (LOCKS / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line.strip())
            assert m, f"locks/{name}: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def installed() -> dict[str, str]:
    return {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}


@pytest.mark.skipif(UNLOCKED, reason="make lock runs the suite on the newest versions before writing the lock")
def test_this_environment_is_exactly_the_lock():
    lock, have = read_lock("dev.txt"), installed()
    drift = {n: (lock.get(n), have.get(n)) for n in set(lock) | set(have) - NOT_LOCKED if lock.get(n) != have.get(n)}
    assert not drift, (
        f"installed versions differ from locks/dev.txt (locked, installed): {drift}; run `make clean test`"
    )


def frozen_venv(variable: str, default: str, what: str, require: str) -> dict[str, str]:
    """``pip freeze`` of the venv named by ``$variable`` (editable installs left out); a missing
    venv fails under make test (``$require`` set) and is skipped otherwise."""
    venv = os.environ.get(variable, str(REPO / default))
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        if os.environ.get("CI") or os.environ.get(require):
            pytest.fail(f"no {what} venv at {venv}: make test builds it (make {default.strip('.')})")
        pytest.skip(f"no {what} venv at {venv}")
    frozen = subprocess.run(
        [python, "-m", "pip", "freeze", "--exclude-editable", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {canonicalize_name(a): b for a, b in (line.split("==", 1) for line in frozen.split() if "==" in line)}


@pytest.mark.skipif(UNLOCKED, reason="make lock runs the suite on the newest versions before writing the lock")
def test_the_pyreft_venv_is_exactly_its_lock():
    have = frozen_venv("PYREFT_VENV", ".venv-pyreft", "pyreft", "REFTLAB_REQUIRE_PYREFT")
    assert have == read_lock("pyreft.txt")


@pytest.mark.skipif(UNLOCKED, reason="make lock runs the suite on the newest versions before writing the lock")
def test_the_vllm_venv_is_exactly_its_lock():
    have = frozen_venv("VLLM_VENV", ".venv-vllm", "vLLM", "REFTLAB_REQUIRE_VLLM")
    # the three wheels built against another torch are pinned for the resolution, then removed
    removed = {"torchvision", "torchaudio", "torchcodec"}
    lock = read_lock("vllm.txt")
    assert have == {n: v for n, v in lock.items() if n not in removed}
    assert removed <= set(lock) and not removed & set(have)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in project["optional-dependencies"]["serve"]:
        req = Requirement(text)
        assert req.specifier.contains(lock[canonicalize_name(req.name)]), f"locks/vllm.txt: {req}"


def test_every_requirement_of_the_project_is_locked_within_its_range():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = read_lock("dev.txt")
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras["dev"], *extras["lora"], *extras["quant"], *extras["serve"]]
    for text in wanted:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} (pyproject.toml) is missing from locks/dev.txt: run make lock"
        version = lock[name].split("+")[0]  # torch's local label (+cpu)
        assert req.specifier.contains(version, prereleases=True), (
            f"locks/dev.txt pins {name}=={lock[name]}, outside {req}"
        )


def test_the_set_up_installs_through_the_lock():
    makefile = (REPO / "Makefile").read_text()
    installs = [line.strip() for line in makefile.splitlines() if line.strip().startswith("$(PIP)")]
    assert installs and all("$(CONSTRAIN)" in line for line in installs if "torch==" not in line), installs
    assert "CONSTRAIN := -c $(LOCK)" in makefile and "LOCK := locks/dev.txt" in makefile
    assert "CONSTRAINTS=$(PYREFT_CONSTRAIN)" in makefile and "PYREFT_CONSTRAIN := $(PYREFT_LOCK)" in makefile
    assert "CONSTRAINTS=$(VLLM_CONSTRAIN)" in makefile and "VLLM_CONSTRAIN := $(VLLM_LOCK)" in makefile
    start = (REPO / "tests" / "fixtures" / "venv_start.sh").read_text()
    assert 'PIP+=(-c "$CONSTRAINTS")' in start
    for name in ("pyreft", "vllm"):
        script = (REPO / "tests" / "fixtures" / name / "make_venv.sh").read_text()
        assert 'source "$(dirname "$0")/../venv_start.sh"' in script
    assert "make test" in (REPO / ".ci" / "run").read_text()
