# Convenience entry points; everything underneath is CMake presets + CTest.
#   make demo   build, then sample -> inspect -> convert to fp16 -> inspect
#   make test   every test: dev build (warnings as errors) and the ASan+UBSan build
.PHONY: all build demo test test-dev test-asan fuzz bench format clean deps

JOBS ?= $(shell nproc)
DEMO_LAYOUT ?= sd15-ldm
DEMO_DIR ?= build/demo
CKPTKIT := build/release/ckptkit

all: build

deps:
	@scripts/deps.sh

build:
	@scripts/deps.sh --build
	cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS)

demo: build
	@mkdir -p $(DEMO_DIR)
	$(CKPTKIT) sample --layout $(DEMO_LAYOUT) --dtype f32 -o $(DEMO_DIR)/$(DEMO_LAYOUT)-f32.safetensors --force
	$(CKPTKIT) inspect $(DEMO_DIR)/$(DEMO_LAYOUT)-f32.safetensors
	$(CKPTKIT) convert $(DEMO_DIR)/$(DEMO_LAYOUT)-f32.safetensors --dtype f16 -o $(DEMO_DIR)/$(DEMO_LAYOUT)-f16.safetensors --force
	$(CKPTKIT) inspect $(DEMO_DIR)/$(DEMO_LAYOUT)-f16.safetensors

test: deps test-dev test-asan

test-dev:
	cmake --preset dev >/dev/null
	cmake --build --preset dev -j $(JOBS)
	ctest --preset dev -j $(JOBS)

test-asan:
	cmake --preset asan >/dev/null
	cmake --build --preset asan -j $(JOBS)
	ctest --preset asan -j $(JOBS)

# make fuzz [FUZZ_TARGET=safetensors_header|zip|pickle|torch_checkpoint] [FUZZ_SECONDS=300]
FUZZ_TARGET ?= safetensors_header
fuzz: deps
	cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz -j $(JOBS) --target $(FUZZ_TARGET)_fuzz
	mkdir -p build/fuzz/corpus-$(FUZZ_TARGET)
	build/fuzz/fuzz/$(FUZZ_TARGET)_fuzz -max_total_time=$${FUZZ_SECONDS:-300} \
	  $$(test -f fuzz/$(FUZZ_TARGET).dict && echo -dict=fuzz/$(FUZZ_TARGET).dict) \
	  build/fuzz/corpus-$(FUZZ_TARGET) fuzz/corpus/$(FUZZ_TARGET)

bench:
	bench/run

format:
	clang-format -i $$(git ls-files '*.cc' '*.h')

clean:
	rm -rf build
