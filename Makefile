# The two commands of the README, and the steps they are made of.
#   make demo   set up, build, run the embedded demo
#   make test   set up, build, run every test
BUILD ?= build
JOBS ?= 2

.PHONY: setup configure build build-cli test demo demo-tools bench clean

setup:
	scripts/setup

configure: setup
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release

build: configure
	cmake --build $(BUILD) -j$(JOBS)

# The demo needs the command line only: the tests and benchmarks are 39 of the 107 objects
# and about 40% of a clean build (6m 20s -> 3m 39s on 2 cores).
build-cli: configure
	cmake --build $(BUILD) -j$(JOBS) --target retort

test: build
	cd $(BUILD) && ctest --output-on-failure

demo: build-cli
	scripts/demo

# The same pipeline on traces that do their arithmetic with a Python call run in the sandbox
# (docs/tools.md): its own run folder, the same held-out prompts as the demo.
demo-tools: build-cli
	scripts/demo run_dir=runs/demo_tools data.tools=python grpo.tools.enabled=true eval.tools.enabled=true \
	  $(if $(wildcard runs/demo/summary.json),compare_to=runs/demo)

bench: build
	tests/bench/run

clean:
	rm -rf $(BUILD)
