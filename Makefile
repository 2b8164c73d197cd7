# The two README commands. `make test` builds .venv from nothing; `make demo` runs the main job.
PYTHON ?= python3
VENV ?= .venv
# The torch build to install before the package. The default is this project's CPU reference machine;
# on a GPU box pass the build you need, e.g. `make test TORCH_SPEC="torch torchvision"` or TORCH_SPEC= to keep yours.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2

.PHONY: install lint test test-fast demo synthfaces synthfaces-check clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if [ -n "$(TORCH_SPEC)" ]; then $(PY) -m pip install -q --disable-pip-version-check $(TORCH_SPEC); fi
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	WANDB_MODE=offline $(PY) -m pytest $(PYTEST_ARGS) tests

# The quick loop: tests/unit (maths, parity fixtures, single modules) without the slow ones; `make test` runs all
# three folders (unit, integration, e2e) and ends with the seconds per test file.
test-fast: $(VENV)/.installed
	WANDB_MODE=offline $(PY) -m pytest $(PYTEST_ARGS) -m "not slow" tests/unit

demo: $(VENV)/.installed
	WANDB_MODE=offline $(PY) experiments/demo.py

# Rebuild the three shipped synthfaces models (oracle, tiny CLIP, DDPM) into assets/synthfaces/ (hours on 2 CPU cores;
# resumable training state in outputs/synthfaces/: add --resume to SYNTHFACES_ARGS to continue it).
SYNTHFACES_ARGS ?= --ddpm-steps 12000 --max-minutes 180
synthfaces: $(VENV)/.installed
	$(PY) -m asyrp.synthfaces.build all $(SYNTHFACES_ARGS)

# Measure them (oracle/CLIP accuracy, DDPM samples judged by the oracle, inversion PSNR) -> outputs/synthfaces_check/
synthfaces-check: $(VENV)/.installed
	$(PY) experiments/synthfaces_check.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
