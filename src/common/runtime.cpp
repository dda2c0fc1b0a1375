#include "common/runtime.h"

#include "common/config.h"
#include "common/error.h"
#include "common/platform.h"

#include <cstdlib>  // defines: std::getenv

namespace retort {

void RuntimeConfig::bind(ConfigBinder& b) {
  b.field("threads", threads, Range::between(0, 4096));
  b.field("seed", seed);
  b.choice("device", device, {"auto", "cpu", "cuda"});
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

std::string apply_runtime(const RuntimeConfig& cfg) {
  int threads = cfg.threads > 0 ? cfg.threads : cpu_count();
  at::set_num_threads(threads);
  torch::manual_seed(static_cast<uint64_t>(cfg.seed));
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  const char* wait = std::getenv("OMP_WAIT_POLICY");
  return "torch " + std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) + ", " + std::to_string(at::get_num_threads()) +
         " intra-op threads, OPENBLAS_CORETYPE=" + (coretype ? coretype : "(unset)") + ", OMP_WAIT_POLICY=" + (wait ? wait : "(unset)") + ", device " +
         resolve_device(cfg.device);
}

}  // namespace retort
