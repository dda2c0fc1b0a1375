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
// It also fixes glibc's mmap threshold (kDefaultMmapThreshold, below).
// Returns only when no re-exec was needed or possible. Called from a static constructor in
// every executable (common/openblas_env.cpp). A value the user set always wins.
void ensure_process_env();

// glibc's mmap threshold: an allocation of at least this many bytes is its own mmap, returned
// to the system when freed (and paid for with page faults when first written); smaller ones come
// from the heap, whose freed space glibc keeps. Left alone the threshold is dynamic: it rises to
// the size of each freed mmapped block, up to 32 MiB. Two phases want different ones:
//   training steps (TrainingHeapScope): 1 MiB. At long lengths a step allocates and frees many
//     tensors of 1-32 MiB (a [8192, 896] float32 activation is 28 MiB); from the heap, what they
//     fragment stays resident: an 8k-token SFT step of a 2-layer Qwen2.5-0.5B shape kept ~0.8 GB
//     more than its live tensors (docs/long_traces.md).
//   everything else, sampling above all: 32 MiB, the dynamic threshold's ceiling, which it
//     reaches after the first large free. A decode step allocates tens of MiB of short-lived
//     tensors (gathered keys, logits); as fresh mmaps, zeroed page by page, they made the rollout
//     engine 1.75x slower (tests/bench/bench_rollout, RETORT_MALLOC=glibc to compare).
// The process starts in the second (ensure_process_env). Nothing is changed when the user set
// MALLOC_MMAP_THRESHOLD_ (or the glibc.malloc.mmap_threshold tunable), or RETORT_MALLOC=glibc.
constexpr int kTrainingMmapThreshold = 1 << 20;
constexpr int kDefaultMmapThreshold = 32 << 20;

// Training's threshold for the scope's lifetime (forward, backward, optimizer step); nests.
// An inactive scope changes nothing: the fresh mappings cost a page fault per 4 KiB, which a
// small model's step cannot hide (MicroBatchConfig::compact_heap decides, src/train/micro_batch.h).
class TrainingHeapScope {
 public:
  explicit TrainingHeapScope(bool active = true);
  ~TrainingHeapScope();
  TrainingHeapScope(const TrainingHeapScope&) = delete;
  TrainingHeapScope& operator=(const TrainingHeapScope&) = delete;

 private:
  bool active_;
};

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
