// Torch runtime settings for a process: intra-op threads and a reproducible seed.
#pragma once

#include <cstdint>  // defines: int64_t
#include <string>   // defines: std::string

namespace retort {

class ConfigBinder;

struct RuntimeConfig {
  int threads = 0;      // intra-op threads; 0 = the number of cores (Torch defaults to 1 here)
  int64_t seed = 1234;  // seeds Torch's CPU and CUDA generators
  std::string device = "auto";  // auto | cpu | cuda
  void bind(ConfigBinder& b);
};

// Applies the config; returns a one-line description for the log.
std::string apply_runtime(const RuntimeConfig& cfg);

// "cpu" or "cuda" as resolved from cfg.device.
std::string resolve_device(const std::string& device);

}  // namespace retort
