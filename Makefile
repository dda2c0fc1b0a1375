# The two commands of the README, and the steps they are made of.
#   make demo   set up, build, run the embedded demo
#   make test   set up, build, run every test
BUILD ?= build
JOBS ?= 2

.PHONY: setup configure build build-cli test demo demo-tools bench clean

setup:
	scripts/setup

# Ninja for a new build folder (scripts/setup installs it): it compiles a library's objects while
# the libraries below it still compile, where make builds one library after the other and leaves
# a core idle at each step (a clean build of the command line: 3m 28s with make, see docs/results.md).
# An existing folder keeps the generator it was made with.
configure: setup
	@gen=; if [ ! -f $(BUILD)/CMakeCache.txt ] && command -v ninja >/dev/null; then gen="-G Ninja"; fi; \
	  echo cmake -S . -B $(BUILD) $$gen -DCMAKE_BUILD_TYPE=Release; \
	  cmake -S . -B $(BUILD) $$gen -DCMAKE_BUILD_TYPE=Release

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
