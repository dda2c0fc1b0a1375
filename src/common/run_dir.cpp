#include "common/run_dir.h"

#include <sys/stat.h>  // defines: mkdir, stat

#include <cerrno>   // defines: errno
#include <cstring>  // defines: std::strerror
#include <fstream>  // defines: std::ifstream

#include "common/config.h"
#include "common/error.h"

namespace retort {

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
                            "choose another run folder (run.dir=...)"});
    }
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw Error(ErrorInfo{"the path exists but is not a folder", path, "a folder", "a file", ""});
  }
}

RunDir::RunDir(std::string path) : path_(std::move(path)) {
  while (path_.size() > 1 && path_.back() == '/') path_.pop_back();
  make_dirs(path_);
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
