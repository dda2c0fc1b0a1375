// Process-level facts and fixes that must happen before any work starts.
#pragma once

#include <string>  // defines: std::string

namespace retort {

// Environment that the BLAS, ATen and OpenMP runtimes read once, when they load or first
// dispatch, so it must be in place before the process starts. When the user has not set them,
// this re-executes the current program with:
//   OPENBLAS_CORETYPE=Haswell and ATEN_CPU_CAPABILITY=avx2 on any x86-64 CPU with AVX2: one
//     kernel choice that every such machine has, so that CPU float32 results repeat bit for bit
//     across x86-64 machines for a given thread count. Left alone, OpenBLAS 0.3.21 (Debian 12)
//     picks by CPU model (and falls back to a slow generic kernel on recent CPUs it does not
//     know) and ATen picks AVX-512 kernels where its cpuinfo sees AVX-512 (an AVX-512 Xeon:
//     yes; some AVX-512 EPYCs: no), and each choice rounds differently: two 2-core machines gave
//     different trajectories of the same demo. The cost is measured by `tests/bench/run --only
//     cpu_kernels`; set the two variables yourself for the CPU's own kernels;
//   OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning. On a shared CPU (GRPO's
//     sandbox workers beside the sampler, other jobs) spinning threads take the cores the
//     others need; measured in docs/rollout.md.
// Returns only when no re-exec was needed or possible. Called from a static constructor in
// every executable (common/openblas_env.cpp). A value the user set always wins.
void ensure_process_env();

// The OpenBLAS core type and ATen CPU capability retort pins on this CPU ("Haswell" and
// "avx2" on x86-64 with AVX2 and FMA; "" where nothing is pinned).
std::string preferred_openblas_coretype();
std::string preferred_aten_capability();

// Number of online CPUs (at least 1).
int cpu_count();

// Bytes of memory the machine can still give this process: MemAvailable of /proc/meminfo,
// or physical pages when that is unreadable; -1 when neither is known.
double available_memory_bytes();

// Throws retort::Error when `bytes` exceed the available memory, before anything is allocated
// (an allocation of terabytes otherwise ends in an allocator's stack trace or the OOM killer).
// `what` says what would be allocated ("the model's weights (2.6e13 parameters)"), `where`
// the key or option that sized it, `hint` what to change.
void check_fits_in_memory(double bytes, const std::string& what, const std::string& where, const std::string& hint);

// Seconds since an arbitrary fixed point (steady clock).
double now_seconds();

}  // namespace retort
