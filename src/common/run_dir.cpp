#include "common/run_dir.h"

#include <fcntl.h>     // defines: open, O_CLOEXEC
#include <sys/file.h>  // defines: flock, LOCK_EX, LOCK_NB
#include <sys/stat.h>  // defines: mkdir, stat
#include <unistd.h>    // defines: close, getpid, ftruncate, pwrite

#include <cerrno>      // defines: errno
#include <cstring>     // defines: std::strerror
#include <filesystem>  // defines: std::filesystem::weakly_canonical
#include <fstream>     // defines: std::ifstream

#include "common/config.h"
#include "common/error.h"

namespace retort {

void check_run_dir_path(const std::string& path, const std::string& key) {
  if (path.empty()) {
    throw Error(ErrorInfo{"config key '" + key + "' is empty", "", "a folder for the run's files, e.g. runs/NAME", "\"\"",
                          "set " + key + "=runs/NAME"});
  }
  std::error_code ec;
  std::filesystem::path resolved = std::filesystem::weakly_canonical(std::filesystem::absolute(path, ec), ec);
  if (!ec && resolved == resolved.root_path()) {
    throw Error(ErrorInfo{"config key '" + key + "' resolves to the root folder", "", "a folder below /, e.g. runs/NAME",
                          quote_for_error(path), "set " + key + "=runs/NAME"});
  }
}

void make_dirs(const std::string& path) {
  if (path.empty()) return;
  std::string cur;
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    cur = path.substr(0, pos);
    if (cur.empty()) continue;
    if (::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) {
      throw Error(ErrorInfo{"cannot create the folder", cur, "a writable location", std::strerror(errno),
                            "choose another run folder (run_dir=...)"});
    }
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw Error(ErrorInfo{"the path exists but is not a folder", path, "a folder", "a file", ""});
  }
}

RunDir::RunDir(std::string path, bool lock) : path_(std::move(path)) {
  check_run_dir_path(path_);
  while (path_.size() > 1 && path_.back() == '/') path_.pop_back();
  make_dirs(path_);
  if (!lock) return;
  const std::string lock_path = file("run.lock");
  // O_CLOEXEC: a verifier or sandbox child that execs does not inherit the lock.
  lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd_ < 0) {
    throw Error(ErrorInfo{"cannot open the run lock", lock_path, "a writable run folder", std::strerror(errno),
                          "choose another run folder (run_dir=...)"});
  }
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {0};
    ssize_t n = ::pread(lock_fd_, buf, sizeof buf - 1, 0);
    std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "unknown";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    ::close(lock_fd_);
    lock_fd_ = -1;
    if (err == EWOULDBLOCK) {
      throw Error(ErrorInfo{"the run directory is in use by another retort run (pid " + holder + ")", path_,
                            "a run directory no other run holds", "locked by pid " + holder,
                            "wait for that run to finish or stop it, or choose another run_dir"});
    }
    throw Error(ErrorInfo{"cannot lock the run directory", lock_path, "flock to succeed", std::strerror(err), ""});
  }
  // The holder's pid, for the refusal above (the lock, not the file, is what counts).
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    ::close(lock_fd_);
    lock_fd_ = -1;
    throw Error(ErrorInfo{"cannot write the run lock", lock_path, "a writable run folder", std::strerror(errno), "free some disk space"});
  }
}

RunDir::~RunDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

const std::vector<std::string> kResumeFreeKeys = {"runtime.threads", "log_every", "eval_every", "save_every", "keep_last",
                                                  "resume", "output"};

void RunDir::check_resumed_config(const nlohmann::json& resolved, nlohmann::json (*canonical)(const nlohmann::json&),
                                  const std::vector<std::string>& free_keys) const {
  const std::string saved = file("config.resolved.json");
  std::error_code ec;
  if (!std::filesystem::exists(saved, ec)) return;  // a run from before configs were saved: nothing to compare
  nlohmann::json then = canonical(load_json_file(saved)), now = canonical(resolved);
  for (const auto& key : free_keys) {
    std::string pointer = "/" + key;
    for (char& c : pointer) c = c == '.' ? '/' : c;
    const nlohmann::json::json_pointer ptr(pointer);
    for (nlohmann::json* doc : {&then, &now}) {
      if (!doc->contains(ptr)) continue;
      doc->at(ptr.parent_pointer()).erase(ptr.back());
    }
  }
  if (then == now) return;
  throw Error(ErrorInfo{"cannot resume: the run in this folder was started under a different config", saved,
                        "the same config as the checkpointed run", config_differences(then, now),
                        "resume with the original values, or use a new run_dir (or delete " + path_ + ") to start over"});
}

void RunDir::save_resolved_config(const nlohmann::json& resolved) const {
  write_json_file_atomic(file("config.resolved.json"), resolved);
}

void truncate_jsonl_after_step(const std::string& path, int64_t step) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return;
  std::string line, kept;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) continue;  // a line cut by the kill
    auto it = j.find("step");
    if (it != j.end() && it->is_number() && it->get<int64_t>() > step) continue;
    kept += line + "\n";
  }
  f.close();
  write_file_atomic(path, kept);
}

}  // namespace retort
