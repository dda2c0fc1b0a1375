// Linked into every executable (retort, retort_tests, benchmarks): fixes the OpenBLAS
// kernel choice before main() runs. See common/platform.h.
#include "common/platform.h"

namespace {
struct OpenblasEnv {
  OpenblasEnv() { retort::ensure_openblas_coretype(); }
} openblas_env_instance;
}  // namespace
