// Loading verifier plugins from shared libraries (see plugin.h).
#include "rewards/plugin.h"

#include <dlfcn.h>  // defines: dlopen, dlsym, dlerror

#include "common/error.h"  // defines: retort::Error

namespace retort::rewards {

void load_plugin(const std::string& path, Registry& registry) {
  // RTLD_LOCAL: two plugins may define the same internal symbols without clashing.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* why = dlerror();
    throw Error(ErrorInfo{"cannot load verifier plugin", "rewards.plugins: " + path, "a loadable shared library",
                          why ? why : "unknown dlopen error",
                          "check the path and that the library was built for this machine"});
  }
  dlerror();
  void* sym = dlsym(handle, "retort_register_verifiers");
  const char* err = dlerror();
  if (err || !sym) {
    dlclose(handle);
    throw Error(ErrorInfo{"verifier plugin has no entry point", "rewards.plugins: " + path,
                          "extern \"C\" void retort_register_verifiers(retort::rewards::Registry&)",
                          err ? err : "null symbol", "export the function with extern \"C\" (see rewards/README.md)"});
  }
  auto fn = reinterpret_cast<retort_register_verifiers_fn>(sym);
  fn(registry);
  registry.check("rewards.plugins: " + path);
  // The handle is never closed: verifiers created by the plugin hold code from it.
}

}  // namespace retort::rewards
