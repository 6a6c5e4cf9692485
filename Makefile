# Thin driver over meson. `make demo` and `make check` are the README's two
# commands: each installs what is missing on a fresh Debian machine (as root),
# builds, and runs the demo or the whole test suite.
BUILD ?= build
MESON_OPTS ?=

.PHONY: all deps test-deps build demo check clean

all: build

deps:
	./scripts/install-deps.sh

test-deps:
	./scripts/install-deps.sh --tests

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_OPTS)

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo: deps build
	./$(BUILD)/tools/kvmig demo

check: test-deps build
	./scripts/run-tests.sh $(BUILD)

clean:
	rm -rf $(BUILD)
