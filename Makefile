# wscan — see README.md. Every target installs what it needs first (Debian, as root).
SHELL := /bin/bash
SWIFT ?= swift
DB ?= wscan.db
BIN_DEBUG := .build/debug/wscan
BIN := .build/release/wscan

.PHONY: all deps deps-system deps-python build release test demo bench corpus fixtures minilm clean

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

test: deps minilm
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build 2>&1 | tee .build/test.log | grep -vE '^Test (Case|Suite) .*(started|passed)' ; exit $${PIPESTATUS[0]}

demo: deps minilm release
	@rm -f demo.db demo.db-wal demo.db-shm
	$(BIN) index corpus --db demo.db
	@if [ -s .cache/minilm/model.safetensors ]; then $(BIN) index .cache/minilm --db demo.db; fi
	$(BIN) ls --db demo.db
	$(BIN) show mlp_seed0.safetensors --db demo.db
	$(BIN) dupes --db demo.db
	$(BIN) query --db demo.db "SELECT c.name, COUNT(*) AS tensors, ROUND(AVG(t.zero_frac), 3) AS mean_zero_frac FROM tensors t JOIN checkpoints c ON c.id = t.checkpoint_id GROUP BY c.id ORDER BY c.name"

bench: deps minilm release
	@bench/run.sh

clean:
	rm -rf .build demo.db* wscan.db*
