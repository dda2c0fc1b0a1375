#include "common/platform.h"

#include <unistd.h>  // defines: execv, readlink, sysconf

#include <chrono>   // defines: std::chrono::steady_clock
#include <cstdlib>  // defines: getenv, setenv
#include <fstream>  // defines: std::ifstream
#include <string>
#include <vector>

namespace retort {

std::string preferred_openblas_coretype() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "SkylakeX";
  if (__builtin_cpu_supports("avx2")) return "Haswell";
#endif
  return "";
}

void ensure_openblas_coretype() {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;  // the user's choice wins
  std::string type = preferred_openblas_coretype();
  if (type.empty()) return;
  // Guard against a re-exec loop should setenv somehow not reach the new image.
  if (std::getenv("RETORT_REEXECED") != nullptr) return;
  setenv("OPENBLAS_CORETYPE", type.c_str(), 1);
  setenv("RETORT_REEXECED", "1", 1);

  // Rebuild argv from /proc/self/cmdline: this runs from a static constructor, before main.
  std::ifstream f("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> args;
  size_t start = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    if (all[i] == '\0') {
      args.emplace_back(all.substr(start, i - start));
      start = i + 1;
    }
  }
  if (args.empty()) return;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv("/proc/self/exe", argv.data());
  // execv returned: keep going with the slow kernel rather than fail.
}

int cpu_count() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace retort
