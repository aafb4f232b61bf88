# Two commands do all set-up on a fresh machine: `make test` and `make bench`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Stable CPU timings on small machines (see docs/DESIGN notes on glibc malloc).
export MALLOC_MMAP_MAX_ := 0
export MALLOC_TRIM_THRESHOLD_ := 68719476736

# `make bench EXTERNAL="ct=DIR,mri=DIR"` also scores every run on real sets (see docs/runner.md);
# `make devset` writes data/devset/{ct,mri} from the shared real samples (REAL=... to move them).
EXTERNAL ?=
REAL     ?= ../shared/data/real

.PHONY: test test-all bench bench-full devset real-cv gpu-check gpu-wheels install clean

install: $(STAMP)

# Re-installs only when pyproject.toml changed.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	WANDB_MODE=offline $(PY) -m pytest -m "not slow" -q --durations=15

test-all: $(STAMP)
	WANDB_MODE=offline $(PY) -m pytest -q

# `make bench`: one seed (a quick look; 113.9 min on a 2-core AMD EPYC with AVX-512 BF16 at f802b53, 113.8 and 123.8 min for the same steps at 85cf660 and 98d0309 (104.0 min on an Intel AMX Xeon at 69571c7) with the devset as EXTERNAL, every run converged, docs/convergence.md). `make bench-full`: SEEDS seeds, the
# committed leaderboard.md (ranking statistics over test patients and seeds). Both resume.
SEEDS ?= 0,1,2
bench: $(STAMP)
	$(VENV)/bin/liverbench run --suite paper --data phantom --modalities ct,mri --seeds 0 --preset cpu --out results --resume $(if $(EXTERNAL),--external "$(EXTERNAL)")
	$(VENV)/bin/liverbench report --results results --out leaderboard.md

bench-full: $(STAMP)
	$(VENV)/bin/liverbench run --suite paper --data phantom --modalities ct,mri --seeds $(SEEDS) --preset cpu --out results-full --resume $(if $(EXTERNAL),--external "$(EXTERNAL)")
	$(VENV)/bin/liverbench report --results results-full --out leaderboard.md

devset: $(STAMP)
	$(VENV)/bin/liverbench data devset --real "$(REAL)" --out data/devset

# The recipe on real anatomy: the cpu preset's U-Net Baseline in 3-fold cross-validation by patient over the six
# shared CHAOS T2 patients (4 train+val / 2 test per fold), at two seeds (one seed moves the mean by up to 0.01);
# results-cv/crossval.md (docs/convergence.md). A recipe experiment: make real-cv CV_PRESET=my.yaml [CV_ENTRY=...]
CV_ENTRY ?= unet_baseline
CV_PRESET ?= cpu
CV_SEEDS ?= 0,1
real-cv: $(STAMP)
	$(VENV)/bin/liverbench crossval --data "$(REAL)/chaos_t2" --modality mri --entry $(CV_ENTRY) --folds 3 \
	  --seeds $(CV_SEEDS) --preset $(CV_PRESET) --out results-cv

# On a lent GPU machine (<= 8 min on one GPU): writes docs/gpu/gpu_check.{json,md}.
# DRY_RUN=1: the same script on the CPU at tiny sizes (CI), writes docs/gpu/dry_run.{json,md}.
# With wheels in $(GPU_WHEELS) (`make gpu-wheels`, for a machine without a package index): the machine's python3
# and its torch, plus those wheels (tools/gpu_check.sh); otherwise the project's venv.
GPU_WHEEL_PYTHON ?= 3.12
GPU_WHEELS ?= .whl
export GPU_WHEELS
gpu-check: $(if $(wildcard $(GPU_WHEELS)/*.whl),,$(STAMP))
ifneq ($(wildcard $(GPU_WHEELS)/*.whl),)
	sh tools/gpu_check.sh $(if $(DRY_RUN),--dry-run)
else
	WANDB_MODE=disabled $(PY) -m tools.gpu_check $(if $(DRY_RUN),--dry-run)
endif

gpu-wheels:
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_WHEEL_PYTHON) \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d $(GPU_WHEELS) -r tools/gpu_wheels.txt

clean:
	rm -rf $(VENV) results results-full results-cv .pytest_cache
