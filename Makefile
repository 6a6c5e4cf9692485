# Thin driver over meson. `make demo` and `make check` are the README's two
# commands: each installs what is missing on a fresh Debian machine (as root),
# builds, and runs the demo or the whole test suite.
BUILD ?= build
MESON_OPTS ?=
# The unit and integration suites run a second time under AddressSanitizer +
# UndefinedBehaviorSanitizer from this build directory.
ASAN_BUILD ?= $(BUILD)-asan

.PHONY: all deps test-deps build demo check clean

all: build

deps:
	./scripts/install-deps.sh

test-deps:
	./scripts/install-deps.sh --tests

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_OPTS)

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) $(MESON_OPTS) -Db_sanitize=address,undefined -Db_lundef=false

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo: deps build
	./$(BUILD)/tools/kvmig demo

check: test-deps build $(ASAN_BUILD)/build.ninja
	ninja -C $(ASAN_BUILD)
	./scripts/run-tests.sh $(BUILD) $(ASAN_BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
