// Linked into every executable (retort, retort_tests, benchmarks): fixes the OpenBLAS
// kernel choice and the OpenMP wait policy before main() runs. See common/platform.h.
#include "common/platform.h"

namespace {
struct OpenblasEnv {
  OpenblasEnv() { retort::ensure_process_env(); }
} openblas_env_instance;
}  // namespace
