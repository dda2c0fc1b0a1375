#include "common/platform.h"

#include <malloc.h>  // defines: mallopt, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
#include <unistd.h>  // defines: execv, readlink, sysconf

#include <atomic>   // defines: std::atomic
#include <chrono>   // defines: std::chrono::steady_clock
#include <cstdio>   // defines: std::snprintf
#include <cstdlib>  // defines: getenv, setenv
#include <fstream>  // defines: std::ifstream
#include <cstring>  // defines: std::strstr, std::strcmp
#include <string>
#include <vector>

#include "common/error.h"  // defines: retort::Error

namespace retort {

double available_memory_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string key;
  double kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024.0;
  }
  const long pages = ::sysconf(_SC_AVPHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : -1.0;
}

void check_fits_in_memory(double bytes, const std::string& what, const std::string& where, const std::string& hint) {
  const double avail = available_memory_bytes();
  if (avail < 0 || bytes <= avail) return;
  char need[64], have[64];
  std::snprintf(need, sizeof need, "%.3g GB", bytes / 1e9);
  std::snprintf(have, sizeof have, "%.3g GB available", avail / 1e9);
  throw Error(ErrorInfo{what + " would need " + need + " of memory, more than this machine has", where, have, need, hint});
}

namespace {
bool has_avx2_fma() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// Sets name=value unless the user set it; true when it set it.
bool set_default(const char* name, const std::string& value) {
  if (value.empty() || std::getenv(name) != nullptr) return false;
  return setenv(name, value.c_str(), 1) == 0;
}
}  // namespace

std::string preferred_openblas_coretype() { return has_avx2_fma() ? "Haswell" : ""; }
std::string preferred_aten_capability() { return has_avx2_fma() ? "avx2" : ""; }

namespace {
std::atomic<int> training_heap_depth{0};

// False when the user chose glibc's threshold: MALLOC_MMAP_THRESHOLD_, the glibc.malloc tunable,
// or RETORT_MALLOC=glibc.
bool heap_policy_on() {
#if defined(__GLIBC__)
  static const bool on = [] {
    const char* tunables = std::getenv("GLIBC_TUNABLES");
    const char* mode = std::getenv("RETORT_MALLOC");
    return std::getenv("MALLOC_MMAP_THRESHOLD_") == nullptr && !(tunables && std::strstr(tunables, "mmap_threshold")) &&
           !(mode && std::strcmp(mode, "glibc") == 0);
  }();
  return on;
#else
  return false;
#endif
}

void set_mmap_threshold(int bytes) {
#if defined(__GLIBC__)
  if (!heap_policy_on()) return;
  // Setting the threshold freezes glibc's dynamic rule, which would also keep the heap's top
  // trim threshold at twice it; left at its 128 KiB default, every large free at the top of
  // the heap goes back to the system and the next allocation faults its pages in again.
  mallopt(M_MMAP_THRESHOLD, bytes);
  mallopt(M_TRIM_THRESHOLD, 2 * bytes);
#else
  (void)bytes;
#endif
}
}  // namespace

TrainingHeapScope::TrainingHeapScope(bool active) : active_(active) {
  if (active_ && training_heap_depth.fetch_add(1) == 0) set_mmap_threshold(kTrainingMmapThreshold);
}

TrainingHeapScope::~TrainingHeapScope() {
  if (active_ && training_heap_depth.fetch_sub(1) == 1) set_mmap_threshold(kDefaultMmapThreshold);
}

void ensure_process_env() {
  set_mmap_threshold(kDefaultMmapThreshold);
  bool set = set_default("OPENBLAS_CORETYPE", preferred_openblas_coretype());
  set = set_default("ATEN_CPU_CAPABILITY", preferred_aten_capability()) || set;
  set = set_default("OMP_WAIT_POLICY", "PASSIVE") || set;
  if (!set) return;
  // Guard against a re-exec loop should setenv somehow not reach the new image.
  if (std::getenv("RETORT_REEXECED") != nullptr) return;
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
  // execv returned: keep going with the slow kernel and spinning threads rather than fail.
}

int cpu_count() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace retort
