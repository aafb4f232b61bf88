# Two commands do all set-up on a fresh machine: `make test` and `make bench`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Stable CPU timings on small machines (see docs/DESIGN notes on glibc malloc).
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 68719476736

.PHONY: test test-all bench install clean

install: $(STAMP)

# Re-installs only when pyproject.toml changed.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	WANDB_MODE=offline $(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	WANDB_MODE=offline $(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/liverbench run --suite paper --data phantom --modalities ct,mri --seeds 0 --preset cpu --out results --resume
	$(VENV)/bin/liverbench report --results results --out leaderboard.md

clean:
	rm -rf $(VENV) results .pytest_cache
