#include "common/runtime.h"

#include "common/config.h"
#include "common/error.h"
#include "common/platform.h"

#include <ATen/autocast_mode.h>  // defines: at::autocast::set_enabled

#include <sys/resource.h>  // defines: getrusage

#include <algorithm>  // defines: std::max
#include <cstdio>   // defines: std::snprintf
#include <cstdlib>  // defines: std::getenv, std::atoll, std::strtol
#include <fstream>  // defines: std::ifstream

#if defined(RETORT_HAVE_C10_CUDA)  // a CUDA LibTorch (set by src/CMakeLists.txt when c10_cuda is linked)
#include <c10/cuda/CUDACachingAllocator.h>  // defines: c10::cuda::CUDACachingAllocator::getDeviceStats
#endif

namespace retort {

void RuntimeConfig::bind(ConfigBinder& b) {
  b.field("threads", threads, Range::between(0, 4096));
  b.field("seed", seed);
  b.choice("device", device, {"auto", "cpu", "cuda"});
  b.choice("precision", precision, {"auto", "float32", "bf16"});
}

std::string resolve_device(const std::string& device) {
  if (device == "cpu") return "cpu";
  if (device == "cuda") {
    if (!torch::cuda::is_available()) {
      throw Error(ErrorInfo{"device 'cuda' was requested but no CUDA device is available", "runtime.device",
                            "cpu, cuda or auto", "cuda", "use runtime.device=cpu or build against a CUDA LibTorch"});
    }
    return "cuda";
  }
  if (device == "auto") return torch::cuda::is_available() ? "cuda" : "cpu";
  throw Error(ErrorInfo{"unknown device", "runtime.device", "cpu, cuda or auto", device, ""});
}

namespace {
int env_processes(const char* name) {
  const char* v = std::getenv(name);
  if (!v) return 0;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  return end != v && *end == '\0' && n > 0 && n < (1 << 16) ? static_cast<int>(n) : 0;
}
}  // namespace

int auto_threads() {
  int shared_by = env_processes("LOCAL_WORLD_SIZE");
  if (shared_by == 0) shared_by = env_processes("WORLD_SIZE");
  return std::max(1, cpu_count() / std::max(1, shared_by));
}

std::string apply_runtime(const RuntimeConfig& cfg) {
  int threads = cfg.threads > 0 ? cfg.threads : auto_threads();
  at::set_num_threads(threads);
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  const char* aten = std::getenv("ATEN_CPU_CAPABILITY");
  return "torch " + std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + ", " + std::to_string(at::get_num_threads()) +
         " intra-op threads, OPENBLAS_CORETYPE=" + (coretype ? coretype : "(unset)") +
         ", ATEN_CPU_CAPABILITY=" + (aten ? aten : "(unset)") + ", OMP_WAIT_POLICY=" + (wait ? wait : "(unset)") + ", device " +
         resolve_device(cfg.device);
}

std::string apply_precision(const RuntimeConfig& cfg, const std::string& device) {
  const bool cuda = device.rfind("cuda", 0) == 0 && torch::cuda::is_available();
  if (cfg.precision == "bf16" && !cuda) {
    throw Error(ErrorInfo{"bf16 mixed precision needs a CUDA device", "runtime.precision", "float32 or auto on CPU", "bf16",
                          "use runtime.precision=auto (float32 on CPU)"});
  }
  if (cuda && cfg.precision != "float32") {
    // Parameters stay float32 (the master weights, and AdamW's state with them); matmuls run
    // in bfloat16. The chunked LM head turns autocast off for its logits (float32 log-probs).
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
    return "bf16 autocast";
  }
  return "float32";
}

long long peak_rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;  // "VmHWM:   123456 kB"
  }
  struct rusage ru {};
  if (getrusage(RUSAGE_SELF, &ru) == 0) return static_cast<long long>(ru.ru_maxrss) * 1024;  // kB on Linux
  return 0;
}

MemoryPeak memory_peak() {
  MemoryPeak m;
  m.rss_bytes = peak_rss_bytes();
#if defined(RETORT_HAVE_C10_CUDA)
  if (torch::cuda::is_available()) {
    long long peak = 0;
    for (int d = 0; d < static_cast<int>(torch::cuda::device_count()); ++d) {
      auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(d);
      peak = std::max<long long>(peak, static_cast<long long>(stats.allocated_bytes[0].peak));  // [0] = aggregate pools
    }
    m.cuda_bytes = peak;
  }
#endif
  return m;
}

std::string memory_suffix(const MemoryPeak& m) {
  char buf[64];
  if (m.cuda_bytes >= 0) std::snprintf(buf, sizeof buf, " mem %.2fG cuda %.2fG", m.rss_bytes / 1073741824.0, m.cuda_bytes / 1073741824.0);
  else std::snprintf(buf, sizeof buf, " mem %.2fG", m.rss_bytes / 1073741824.0);
  return buf;
}

}  // namespace retort
