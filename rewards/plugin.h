// Plugin shared libraries: a .so that exports
//   extern "C" void retort_register_verifiers(retort::rewards::Registry& registry);
// and adds its verifiers there. It must be built against this verifier.h with the same
// compiler and C++ standard library (the registry passes std::function and nlohmann::json
// across the boundary). Libraries stay loaded for the life of the process: verifiers they
// made may be alive anywhere.
#pragma once

#include <string>  // defines: std::string

#include "rewards/verifier.h"  // defines: Registry

namespace retort::rewards {

// dlopen()s `path` and calls its retort_register_verifiers. Throws retort::Error naming the
// path when the file cannot be loaded or lacks the entry point (with dlerror()'s reason).
void load_plugin(const std::string& path, Registry& registry);

}  // namespace retort::rewards
