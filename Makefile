# BitVelocity: the top-level Makefile.
#
# Builds every extension through PGXS (each folder under extensions/ and
# bgworkers/ with a Makefile), installs them, runs a local cluster and the
# tests.  `make help` lists the targets.

PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
BV_PORT ?= 5440
export PG_CONFIG BV_PORT

COMMON_DIR := extensions/common
EXT_DIRS := $(sort $(dir $(wildcard extensions/bv_*/Makefile bgworkers/*/Makefile)))
C_SOURCES = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find extensions bgworkers -name '*.[ch]')

.PHONY: all build install deps run stop status test lint format clean help bench fuzz

all: build

help:
	@echo "make deps     install the Debian packages the suite needs (as root; else prints the command)"
	@echo "make build    build every extension (PG_CONFIG=$(PG_CONFIG))"
	@echo "make install  install every extension into that PostgreSQL"
	@echo "make run      deps + install + start the local cluster in .bv/ (BV_PORT=$(BV_PORT))"
	@echo "make status   what is running;  make stop: stop it"
	@echo "make test     deps + install + every test suite on throw-away clusters"
	@echo "make lint     clang-format check and cppcheck;  make format: apply clang-format"
	@echo "make bench    list the benchmarks"
	@echo "make fuzz     libFuzzer runs of the JWT and GraphQL parsers (FUZZ_SECONDS=300 each)"

build:
	@$(MAKE) --no-print-directory -C $(COMMON_DIR)
	@set -e; for d in $(EXT_DIRS); do $(MAKE) --no-print-directory -C $$d; done
	@if [ -f tests/tools/Makefile ]; then $(MAKE) --no-print-directory -C tests/tools; fi

install: build
	@if [ ! -w "$$($(PG_CONFIG) --pkglibdir)" ]; then \
	  echo "bitvelocity: error: cannot write to $$($(PG_CONFIG) --pkglibdir); run 'sudo make install'" >&2; exit 1; fi
	@set -e; for d in $(EXT_DIRS); do $(MAKE) --no-print-directory -C $$d install >/dev/null; done
	@echo "install: $(notdir $(basename $(wildcard control/*.control))) installed into $$($(PG_CONFIG) --sharedir)/extension"

deps:
	@tools/deps.sh

run: deps
	@$(MAKE) --no-print-directory install
	@tools/cluster.sh start

stop:
	@tools/cluster.sh stop

status:
	@tools/cluster.sh status

test: deps
	@$(MAKE) --no-print-directory install
	@tools/test.sh

lint:
	@clang-format --dry-run --Werror $(C_SOURCES)
	@cppcheck --quiet --error-exitcode=1 --inline-suppr \
	  --enable=warning,performance,portability --std=c99 \
	  --suppress=missingIncludeSystem --suppress=unknownMacro \
	  -I $(COMMON_DIR) -I $$($(PG_CONFIG) --includedir-server) \
	  -D__GNUC__ -DPG_MODULE_MAGIC= $(filter %.c,$(C_SOURCES))
	@echo "lint: clang-format and cppcheck clean"

format:
	@clang-format -i $(C_SOURCES)

bench:
	@echo "benchmarks (make bench-<name>; BENCH_SCALE=small for a quick run):"
	@ls bench 2>/dev/null | sed -n 's/\.sh$$//p' | sed 's/^/  bench-/' || true
	@[ -d bench ] || echo "  (none yet)"

bench-%:
	@tools/bench.sh $*

fuzz:
	@tools/fuzz.sh

clean:
	@$(MAKE) --no-print-directory -C $(COMMON_DIR) clean
	@set -e; for d in $(EXT_DIRS); do $(MAKE) --no-print-directory -C $$d clean; done
	@if [ -f tests/tools/Makefile ]; then $(MAKE) --no-print-directory -C tests/tools clean; fi
