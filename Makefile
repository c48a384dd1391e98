# sevemu — the two commands: `make demo` and `make test` (INTERFACES.md §1).
BUILD ?= build
MESON_OPTS ?=
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= qmp,firmware,certs,session,multiboot,linux,decoder,snapshot,migration,ghcb

.PHONY: all build deps demo test check-fast bench fuzz clean

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
	@scripts/deps.sh --test
	@BUILD_DIR=$(BUILD) scripts/linux-assets.sh || echo "sevemu: no Linux test assets (apt-get download failed): the linux suite skips"
	BUILD_DIR=$(BUILD) scripts/run-tests.sh

check-fast: build
	BUILD_DIR=$(BUILD) scripts/run-tests.sh --suite fast

bench: build
	@scripts/deps.sh --bench
	$(BUILD)/tools/sevemu-bench/sevemu-bench

# libFuzzer on every harness (tests/fuzz) for FUZZ_SECONDS each, in build-fuzz (clang, ASan, UBSan).
fuzz:
	@scripts/deps.sh --fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_TARGETS=$(FUZZ_TARGETS) scripts/fuzz.sh

clean:
	rm -rf $(BUILD)
