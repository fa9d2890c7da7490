PYTHON ?= python3
PYTEST ?= $(PYTHON) -m pytest
JOBS ?= 2

.PHONY: install test-deps test test-slow test-all lint example

install:
	$(PYTHON) -m pip install -q .

test-deps:
	scripts/install-test-deps.sh

# The default suite (everything not marked slow).
test:
	$(PYTEST) -n $(JOBS) -q

# Kernel boots, cross toolchains, large images.
test-slow:
	$(PYTEST) -n $(JOBS) -q -m slow || [ $$? -eq 5 ]

test-all: test test-slow

lint:
	$(PYTHON) -m ruff check rumpfs tests fixtures bench scripts

example:
	rumpfs pack examples/hello -o hello.o && rumpfs ls hello.o

# Benchmark against makefs, GNU cpio, bsdtar and objcopy (issue 7; see docs/benchmark.md).
# make bench: the full run (corpora in $RUMPFS_CORPORA, about an hour with every one-core rerun, 38 min with --one-core limited to the FFS and compressed rows; see docs/benchmark.md);
# make bench-quick or make bench ARGS=--quick: the smoke run.
.PHONY: bench bench-quick
bench:
	$(PYTHON) -m bench $(ARGS)

bench-quick:
	$(PYTHON) -m bench --quick $(ARGS)

# The readers' mutation fuzzer (issue 17; see docs/fuzzing.md).
# make fuzz FUZZ_MUTANTS=100000 FUZZ_SEED=2 FUZZ_OUT=/tmp/fuzz-failures
FUZZ_MUTANTS ?= 10000
FUZZ_SEED ?= 1
FUZZ_JOBS ?= $(JOBS)
FUZZ_OUT ?= /tmp/rumpfs-fuzz-failures
.PHONY: fuzz
fuzz:
	$(PYTHON) tests/fuzz_readers.py --mutants $(FUZZ_MUTANTS) --seed $(FUZZ_SEED) \
		--jobs $(FUZZ_JOBS) --out $(FUZZ_OUT)

# The same for the tar and cpio archives pack takes as sources (one job).
# make fuzz-sources FUZZ_MUTANTS=5000 FUZZ_SEED=3
.PHONY: fuzz-sources
fuzz-sources:
	$(PYTHON) tests/fuzz_sources.py --mutants $(FUZZ_MUTANTS) --seed $(FUZZ_SEED)
