// Process-level facts and fixes that must happen before any work starts.
#pragma once

#include <string>  // defines: std::string

namespace retort {

// OpenBLAS 0.3.21 (Debian 12) does not recognise recent x86 CPUs and falls back to a slow
// generic kernel unless OPENBLAS_CORETYPE is set before the library loads, i.e. before
// the process starts. When the user has not set it, this re-executes the current program
// with OPENBLAS_CORETYPE=SkylakeX (CPUs with AVX-512F) or Haswell (AVX2) and returns only
// when no re-exec was needed or possible. Called from a static constructor in every
// executable (common/openblas_env.cpp).
void ensure_openblas_coretype();

// The OpenBLAS core type this CPU should use ("SkylakeX", "Haswell" or "" when neither).
std::string preferred_openblas_coretype();

// Number of online CPUs (at least 1).
int cpu_count();

// Seconds since an arbitrary fixed point (steady clock).
double now_seconds();

}  // namespace retort
