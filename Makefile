# sevemu — the two commands: `make demo` and `make test` (INTERFACES.md §1).
BUILD ?= build
MESON_OPTS ?=

.PHONY: all build deps demo test check-fast bench clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/build.ninja: | deps
	meson setup $(BUILD) $(MESON_OPTS)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo: build
	$(BUILD)/tools/sevemu-demo/sevemu-demo

test: build
	BUILD_DIR=$(BUILD) scripts/run-tests.sh

check-fast: build
	BUILD_DIR=$(BUILD) scripts/run-tests.sh --suite fast

bench: build
	@scripts/deps.sh --bench
	$(BUILD)/tools/sevemu-bench/sevemu-bench

clean:
	rm -rf $(BUILD)
