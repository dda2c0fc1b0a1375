// Torch runtime settings for a process: intra-op threads and a reproducible seed.
#pragma once

#include <cstdint>  // defines: int64_t
#include <string>   // defines: std::string

namespace retort {

class ConfigBinder;

struct RuntimeConfig {
  int threads = 0;      // intra-op threads; 0 = auto_threads() (Torch defaults to 1 here)
  int64_t seed = 1234;  // seeds Torch's CPU and CUDA generators
  std::string device = "auto";  // auto | cpu | cuda
  // auto | float32 | bf16: bf16 = mixed precision on CUDA (bfloat16 compute through autocast,
  // float32 master weights and optimizer state, float32 log-probs from the chunked LM head);
  // auto = bf16 on CUDA, float32 on CPU (CPU always runs float32).
  std::string precision = "auto";
  void bind(ConfigBinder& b);
};

// The intra-op threads of runtime.threads = 0: the machine's cores divided among the processes
// that share them, at least 1. Data-parallel ranks of one machine (`retort launch -n N`) share
// its cores: N is LOCAL_WORLD_SIZE, else WORLD_SIZE, else 1. One thread per rank is also what
// the small models train fastest with: two intra-op threads in one process took 0.23 s per
// teacher step of the demo against 0.11 s for two ranks of one thread (docs/results.md).
int auto_threads();

// Applies the config; returns a one-line description for the log.
std::string apply_runtime(const RuntimeConfig& cfg);

// "cpu" or "cuda" as resolved from cfg.device.
std::string resolve_device(const std::string& device);

// Turns on bfloat16 autocast for this thread when cfg.precision asks for it and the device is
// CUDA (checked at run time); returns what was chosen ("float32" or "bf16 autocast").
std::string apply_precision(const RuntimeConfig& cfg, const std::string& device);

// The process's peak resident set size in bytes since it started: VmHWM of /proc/self/status
// (Linux), else getrusage's ru_maxrss. 0 when neither is available.
long long peak_rss_bytes();

// Peak memory so far: the process's resident set (CPU) and the CUDA caching allocator's
// peak allocated bytes (-1 when there is no CUDA or this LibTorch was built without it).
struct MemoryPeak {
  long long rss_bytes = 0;
  long long cuda_bytes = -1;
};
MemoryPeak memory_peak();
// " mem 3.21G" (RSS; "cuda 12.3G" added on CUDA) for the progress line; and the metrics fields
// peak_rss_mb / peak_cuda_mb.
std::string memory_suffix(const MemoryPeak& m);

}  // namespace retort
