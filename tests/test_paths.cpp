// The directories of tests/test_paths.h, set by tests/CMakeLists.txt on this file alone.
#include "test_paths.h"

const char* retort_test_source_dir() { return RETORT_TEST_SOURCE_DIR; }
const char* retort_test_binary_dir() { return RETORT_TEST_BINARY_DIR; }
