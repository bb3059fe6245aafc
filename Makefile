# Two commands on a fresh machine:
#   make demo   sets up .venv, builds the CMUdict data set, trains g2p_small (8 minutes
#               on 2 CPU cores), evaluates on 12,000 held-out words, exports an ONNX
#               bundle (float32 + INT8, gate checked) and translates with onnxruntime.
#   make test   runs the test suite (sets up .venv with the test tools first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN_DIR ?= runs/g2p_small
DEMO_CONFIG ?= g2p_small
DEMO_MINUTES ?= 8
MAX_INT8_LOSS ?= 1.0

.PHONY: setup setup-dev setup-web system-packages demo test test-arm64 bench g2p-ensemble clean

$(BIN)/s2s: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(BIN)/s2s

$(VENV)/.dev: $(BIN)/s2s requirements-dev.txt
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.dev

setup: $(BIN)/s2s

setup-dev: $(VENV)/.dev

BUNDLE_DIR ?= runs/g2p_small.bundle

demo: setup
	$(BIN)/s2s train --config $(DEMO_CONFIG) --run-dir $(RUN_DIR) --max-minutes $(DEMO_MINUTES) --progress 2
	$(BIN)/s2s evaluate $(RUN_DIR) --split test --beam 5 --batch-size 256 --samples 8
	$(BIN)/s2s-export $(RUN_DIR) --out $(BUNDLE_DIR) --quantize int8 --gate-sentences 300 --max-int8-loss $(MAX_INT8_LOSS)
	printf 'keras\nsequence\nphoneme\nonnxruntime\n' > $(RUN_DIR)/demo_words.txt
	$(BIN)/s2s-translate $(BUNDLE_DIR) -i $(RUN_DIR)/demo_words.txt --beam 5 | paste $(RUN_DIR)/demo_words.txt -

# The JavaScript runtimes of web/ (onnxruntime-node, onnxruntime-web, playwright-core) from
# package-lock.json; --ignore-scripts: onnxruntime-node's install script would download GPU
# binaries, and the CPU binary ships in the package.
web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	cd web && npm ci --ignore-scripts --no-audit --no-fund

setup-web: web/node_modules/.package-lock.json

# Debian packages the tests use: chromium (the demo page's test) and the SWORD tools and
# Bible modules (the `bible` data set's tests), installed with apt-get when run as root.
SYSTEM_PACKAGES := chromium libsword-utils sword-text-sparv sword-text-kjv
system-packages:
	@if command -v chromium >/dev/null 2>&1 && command -v mod2imp >/dev/null 2>&1 \
		&& [ -d /usr/share/sword/modules/texts/ztext/engKJV2006eb ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(SYSTEM_PACKAGES) (apt-get)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	else echo "make test: the Bible and demo-page tests will be skipped (Debian packages missing); to run them: sudo apt-get install $(SYSTEM_PACKAGES)"; fi

# Lint and format checks, the suite on TensorFlow, then the torch backend's tests in a
# process of their own (KERAS_BACKEND=torch, no TensorFlow).
test: setup-dev setup-web system-packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q tests
	KERAS_BACKEND=torch $(BIN)/python -m pytest -q -m torch_backend tests/torch_backend

# The device side on ARM64 against x86-64 (tests/arm64): a Debian arm64 sysroot under QEMU
# user-mode emulation, made once and kept in ARM64_SYSROOT (about 4 minutes and 500 MB).
ARM64_SYSROOT ?= build/arm64/sysroot
test-arm64: setup-dev setup-web
	PYTHON=$(BIN)/python bash tests/arm64/sysroot.sh $(ARM64_SYSROOT)
	S2S_ARM64=1 S2S_ARM64_SYSROOT=$(abspath $(ARM64_SYSROOT)) $(BIN)/python -m pytest -q -s -m arm64 tests/arm64

# Two g2p_best members with different seeds, side by side with one thread each (on 2 cores
# that trains 1.13x the tokens/s of one run on both), then both decoded as one model on test.
# Each member plans 40 epochs and stops after 116 minutes; the time budget moves the end of
# its learning-rate decay to where the budget stops it, so both finish within 2 hours.
ENSEMBLE_EPOCHS ?= 40
ENSEMBLE_MINUTES ?= 116
g2p-ensemble: setup
	mkdir -p runs
	export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1; \
	$(BIN)/s2s train --config g2p_best --run-dir runs/g2p_ens_a --set training.epochs=$(ENSEMBLE_EPOCHS) \
		--set training.seed=1 --max-minutes $(ENSEMBLE_MINUTES) > runs/g2p_ens_a.log 2>&1 & a=$$!; \
	$(BIN)/s2s train --config g2p_best --run-dir runs/g2p_ens_b --set training.epochs=$(ENSEMBLE_EPOCHS) \
		--set training.seed=2 --max-minutes $(ENSEMBLE_MINUTES) > runs/g2p_ens_b.log 2>&1 & b=$$!; \
	wait $$a; ra=$$?; wait $$b; rb=$$?; \
	[ $$ra -eq 0 ] && [ $$rb -eq 0 ] || { echo "a member failed: see runs/g2p_ens_a.log, runs/g2p_ens_b.log"; exit 1; }
	$(BIN)/s2s evaluate runs/g2p_ens_a --split test --beam 5 --checkpoint last --ensemble runs/g2p_ens_b

# The benchmarks of BENCHMARKS.md (needs a trained bible_small run and its bundle, and
# make demo's g2p_small; int8_families.py runs ARM64 in make test-arm64's sysroot).
BENCH_RUN ?= runs/bible_small
bench: setup-dev setup-web
	$(BIN)/python bench/footprint.py --bundle $(BENCH_RUN).bundle --run-dir $(BENCH_RUN)
	$(BIN)/python bench/decode.py --bundle $(BENCH_RUN).bundle --run-dir $(BENCH_RUN) --paper
	$(BIN)/python bench/train.py --presets g2p_small,bible_small,paper
	$(BIN)/python bench/engines.py --bundles runs/g2p_small.bundle,$(BENCH_RUN).bundle
	$(BIN)/python bench/loop_floor.py --bundles runs/g2p_small.bundle,$(BENCH_RUN).bundle
	$(BIN)/python bench/hostile.py --bundle runs/g2p_small.bundle
	$(BIN)/python bench/int8_families.py --bundle runs/g2p_small.bundle --run-dir runs/g2p_small

clean:
	rm -rf $(VENV) runs web/node_modules
