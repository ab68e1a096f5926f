# wscan — see README.md. Every target installs what it needs first (Debian, as root).
SHELL := /bin/bash
SWIFT ?= swift
DB ?= wscan.db
BIN_DEBUG := .build/debug/wscan
BIN := .build/release/wscan

.PHONY: all deps deps-system deps-test deps-python build release test demo bench fuzz corpus fixtures minilm clean

all: build

deps:
	@scripts/install-deps

deps-system:
	@scripts/install-deps --system

build: deps-system
	$(SWIFT) build

release: deps-system
	$(SWIFT) build -c release

minilm:
	@scripts/fetch-minilm

# Regenerate the committed corpus and reference fixtures (needs numpy, safetensors, torch, gguf, scikit-learn).
corpus: deps
	python3 corpus/make_corpus.py

fixtures: deps minilm
	python3 scripts/make_reference_fixtures.py

deps-test:
	@scripts/install-deps --system --python-test

test: deps-test minilm
	$(SWIFT) build --build-tests
	@set -o pipefail; $(SWIFT) test --skip-build --disable-swift-testing 2>&1 | tee .build/test.log | grep -vE '^Test (Case|Suite) .*(started|passed)'; \
	  rc=$$?; scripts/test-summary .build/test.log; exit $$rc

demo: deps minilm release
	@rm -f demo.db demo.db-wal demo.db-shm
	$(BIN) index corpus --db demo.db
	@if [ -s .cache/minilm/model.safetensors ]; then $(BIN) index .cache/minilm --db demo.db; fi
	$(BIN) ls --db demo.db
	$(BIN) show mlp_seed0.safetensors --db demo.db
	$(BIN) dupes --db demo.db
	$(BIN) analyze spectrum mlp_seed0.safetensors --db demo.db
	$(BIN) analyze sparsity mlp_seed0.safetensors --data corpus/digits_test.npz --db demo.db
	$(BIN) analyze saliency mlp_seed0.safetensors --source magnitude --db demo.db
	$(BIN) analyze saliency mlp_seed0_finetuned.safetensors --source delta --base mlp_seed0.safetensors --db demo.db
	@for b in mlp_seed0_copy.npz mlp_seed0_f16.safetensors mlp_seed0_pruned50.safetensors mlp_seed0_lora4.safetensors \
	          mlp_seed0_permuted.safetensors mlp_seed0_finetuned.safetensors mlp_seed2.safetensors; do \
	  $(BIN) compare mlp_seed0.safetensors $$b --db demo.db | sed -n '4,5p'; done
	$(BIN) compare mlp_seed0.safetensors mlp_seed1.safetensors --align --data corpus/digits_test.npz --db demo.db
	$(BIN) lineage --db demo.db
	$(BIN) report mlp_seed0.safetensors --db demo.db -o reports/mlp_seed0
	$(BIN) report --compare mlp_seed0.safetensors mlp_seed1.safetensors --db demo.db -o reports/compare-seed0-seed1
	$(BIN) report --compare mlp_seed0.safetensors mlp_seed0_permuted.safetensors --db demo.db -o reports/compare-seed0-permuted
	$(BIN) report --compare mlp_seed0.safetensors mlp_seed0_lora4.safetensors --db demo.db -o reports/compare-seed0-lora4
	$(BIN) report --lineage --db demo.db -o reports/lineage
	@if [ -s .cache/minilm/model.safetensors ]; then \
	  $(BIN) analyze spectrum .cache/minilm/model.safetensors --db demo.db | tail -12 && \
	  $(BIN) analyze sparsity .cache/minilm/model.safetensors --db demo.db | tail -2 && \
	  $(BIN) report .cache/minilm/model.safetensors --db demo.db -o reports/minilm; \
	else echo "MiniLM not available: reports/minilm skipped"; fi
	@echo "reports written to reports/ (start with reports/mlp_seed0/README.md)"

bench: deps minilm release
	@bench/run.sh

# Coverage-guided fuzzing of every checkpoint reader (libFuzzer + AddressSanitizer; see README, "Fuzzing").
FUZZ_SECONDS ?= 600
fuzz: deps
	cd fuzz && $(SWIFT) build -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address
	python3 fuzz/make_seeds.py
	@mkdir -p fuzz/corpus fuzz/crashes
	fuzz/.build/debug/FuzzReaders fuzz/corpus fuzz/seeds -max_len=65536 -timeout=10 -rss_limit_mb=4096 \
	  -artifact_prefix=fuzz/crashes/ -max_total_time=$(FUZZ_SECONDS)

clean:
	rm -rf .build fuzz/.build demo.db* wscan.db*
