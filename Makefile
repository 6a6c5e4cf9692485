# Thin driver over meson. `make demo` and `make check` are the README's two
# commands: each installs what is missing on a fresh Debian machine (as root),
# builds, and runs the demo or the whole test suite.
BUILD ?= build
MESON_OPTS ?=
# The unit and integration suites run a second time under AddressSanitizer +
# UndefinedBehaviorSanitizer from this build directory.
ASAN_BUILD ?= $(BUILD)-asan
# The libFuzzer targets (clang, ASan + UBSan) run from this one, each for
# FUZZ_SECONDS.
FUZZ_BUILD ?= $(BUILD)-fuzz
FUZZ_SECONDS ?= 20
# A build without the optional dependencies (rdma-core, liburing, libmicrohttpd): tcp only, no agent,
# a synchronous store. Its unit, headers and integration suites run too.
MIN_BUILD ?= $(BUILD)-min

.PHONY: all deps test-deps build demo rdma-demo check clean

all: build

deps:
	./scripts/install-deps.sh

test-deps:
	./scripts/install-deps.sh --tests

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_OPTS)

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) $(MESON_OPTS) -Db_sanitize=address,undefined -Db_lundef=false

$(MIN_BUILD)/build.ninja:
	meson setup $(MIN_BUILD) $(MESON_OPTS) -Drdma=disabled -During=disabled -Dagent=disabled

$(FUZZ_BUILD)/build.ninja:
	CC=clang meson setup $(FUZZ_BUILD) $(MESON_OPTS) -Dfuzz=true -Dfuzz_seconds=$(FUZZ_SECONDS) \
		-Db_sanitize=address,undefined -Db_lundef=false

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo: deps build
	./$(BUILD)/tools/kvmig demo

# kvmig demo over rdma in the soft-RoCE qemu guest (no RDMA NIC or rdma_rxe needed).
rdma-demo: test-deps build
	./scripts/rdma-demo.sh $(BUILD)

check: test-deps build $(ASAN_BUILD)/build.ninja $(FUZZ_BUILD)/build.ninja $(MIN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	ninja -C $(FUZZ_BUILD)
	ninja -C $(MIN_BUILD)
	./scripts/run-tests.sh $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(MIN_BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) $(MIN_BUILD)
