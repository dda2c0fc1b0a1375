// Where this test build's sources and build outputs are. Only tests/test_paths.cpp carries
// the two directories as compile definitions, so every other test file compiles to the
// same object in any checkout and a compiler cache shares it between clones.
#pragma once

const char* retort_test_source_dir();  // CMAKE_SOURCE_DIR of this build
const char* retort_test_binary_dir();  // CMAKE_BINARY_DIR of this build

#define RETORT_SOURCE_DIR retort_test_source_dir()
#define RETORT_BINARY_DIR retort_test_binary_dir()
