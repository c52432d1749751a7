#!/usr/bin/env bash
# Wheels for `make gpu-check` on a GPU machine without a network (python 3.12, x86_64, with
# its own CUDA torch and transformers).
#
#   bash benchmarks/gpu_wheels.sh download   # here (a network, this repo's .venv): fill .whl/
#   bash benchmarks/gpu_wheels.sh install    # there (make gpu-check does it): install what is missing
#
# download: every distribution that `import reftlab` loads in .venv, at its version here, plus
# bitsandbytes; never torch, triton, nvidia-* or transformers (the GPU machine's own stay).
# install: each wheel whose distribution is not installed yet, without dependencies (the list
# already holds everything reftlab imports), so nothing the machine has is replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-download}
if [ "$mode" = install ]; then
  PY=${GPU_PYTHON:-python3}
  "$PY" - <<'PYEOF'
import importlib.metadata as md
import pathlib
import subprocess
import sys

missing = []
for wheel in sorted(pathlib.Path(".whl").glob("*.whl")):
    name = wheel.name.split("-")[0].replace("_", "-")
    try:
        md.version(name)
    except md.PackageNotFoundError:
        missing.append(str(wheel))
if missing:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *missing], check=True)
print(f"gpu_wheels: installed {len(missing)} missing wheel(s)", file=sys.stderr)
PYEOF
  exit 0
fi
PY=${PY:-.venv/bin/python}
mkdir -p .whl
"$PY" - > .whl/requirements.txt <<'PYEOF'
import importlib.metadata as md
import sys

import reftlab  # noqa: F401  (what `import reftlab` loads)

skip = {"torch", "triton", "transformers", "reftlab", "setuptools", "pip", "pytest", "pluggy", "iniconfig"}
owners = md.packages_distributions()
names = {d for mod in list(sys.modules) for d in owners.get(mod.split(".")[0], [])}
for name in sorted(n for n in names if n.lower() not in skip and not n.lower().startswith("nvidia")):
    print(f"{name}=={md.version(name)}")
print("bitsandbytes")
PYEOF
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any -d .whl -r .whl/requirements.txt
du -sh .whl
