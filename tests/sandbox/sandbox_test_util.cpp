// Helpers shared by the sandbox tests.
#include "sandbox_test_util.h"

#include <dirent.h>    // defines: opendir, readdir
#include <sys/stat.h>  // defines: stat
#include <unistd.h>    // defines: getpid

#include <atomic>   // defines: std::atomic
#include <fstream>  // defines: std::ifstream
#include <memory>   // defines: std::unique_ptr
#include <mutex>    // defines: std::once_flag
#include <sstream>  // defines: std::ostringstream

namespace retort::sandbox {

Executor& shared_executor() {
  static std::unique_ptr<Executor> ex;
  static std::once_flag once;
  std::call_once(once, [] {
    ExecutorConfig cfg;
    cfg.workers = 4;
    ex = std::make_unique<Executor>(cfg);
  });
  return *ex;
}

Executor& warm_executor() {
  static std::unique_ptr<Executor> ex;
  static std::once_flag once;
  std::call_once(once, [] {
    ExecutorConfig cfg;
    cfg.workers = 3;
    cfg.warm_workers = true;
    ex = std::make_unique<Executor>(cfg);
  });
  return *ex;
}

Job py_job(const std::string& source, const std::string& stdin_data) {
  Job j;
  j.language = "python";
  j.source = source;
  j.stdin_data = stdin_data;
  j.limits.wall_s = 10;
  j.limits.cpu_s = 10;
  return j;
}

Job cpp_job(const std::string& source, const std::string& stdin_data) {
  Job j = py_job(source, stdin_data);
  j.language = "cpp";
  return j;
}

std::string unique_token(const std::string& prefix) {
  static std::atomic<int> n{0};
  // Digits only after the prefix: "1000." + ... is a valid argument of sleep(1).
  return prefix + std::to_string(getpid()) + "0" + std::to_string(n.fetch_add(1)) + "0" +
         std::to_string(static_cast<long>(time(nullptr)) % 100000);
}

int count_processes_with(const std::string& token) {
  int count = 0;
  DIR* d = opendir("/proc");
  if (d == nullptr) return -1;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/cmdline", std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    if (ss.str().find(token) != std::string::npos) ++count;
  }
  closedir(d);
  return count;
}

bool host_path_exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

}  // namespace retort::sandbox
