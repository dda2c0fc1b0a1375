// The run directory (DESIGN.md section 5): runs/NAME/ with config.resolved.json,
// metrics.jsonl, chains.jsonl, checkpoints/step-N/, report.html.
//
// A run directory belongs to one run at a time: RunDir takes an exclusive flock(2) on
// RUN_DIR/run.lock (its pid written inside). The kernel drops the lock when the process dies,
// however it dies, so a killed run can be resumed at once; a second run on the same folder is
// refused naming the holder's pid. An empty run_dir, or one that resolves to "/", is refused
// before anything is created (a run would otherwise write /final, /metrics.jsonl, ...).
#pragma once

#include <cstdint>  // defines: int64_t
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort {

class RunDir {
 public:
  // Checks the path (not empty, not "/"), creates the folder (and parents) when missing, and
  // takes the run lock when `lock` (data parallel: rank 0 only, the ranks share the folder).
  // Throws retort::Error naming the path (and the holder's pid when the folder is in use).
  explicit RunDir(std::string path, bool lock = true);
  ~RunDir();
  RunDir(const RunDir&) = delete;
  RunDir& operator=(const RunDir&) = delete;

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::string checkpoint(int64_t step) const { return path_ + "/checkpoints/step-" + std::to_string(step); }

  // Saves the resolved config (every default filled in, every override applied), atomically.
  void save_resolved_config(const nlohmann::json& resolved) const;

  // Resume: refuses (naming the keys) when the config.resolved.json of the run being resumed
  // differs from `resolved` in a key that can change results; `free_keys` ("runtime.threads",
  // "log_every") may differ. Both sides go through `canonical` (canonical_config<T>) first, so
  // a config saved before a key existed compares by that key's default.
  void check_resumed_config(const nlohmann::json& resolved, nlohmann::json (*canonical)(const nlohmann::json&),
                            const std::vector<std::string>& free_keys) const;

 private:
  std::string path_;
  int lock_fd_ = -1;  // open on RUN_DIR/run.lock while this run holds it
};

// Keys of a training config (sft, distill, grpo) that cannot change its results: a resume may
// change them.
extern const std::vector<std::string> kResumeFreeKeys;

// Refuses a run directory that is empty or resolves to the root folder; `key` names the
// config key in the error ("run_dir", "output").
void check_run_dir_path(const std::string& path, const std::string& key = "run_dir");

// mkdir -p; throws retort::Error naming the path on failure.
void make_dirs(const std::string& path);

// Resume: drops the lines of a JSON-lines log (metrics.jsonl, chains.jsonl) whose "step" is
// greater than `step` (what a killed run wrote after its last checkpoint) and any line cut by
// the kill, atomically (temporary file + rename). A missing file is left missing.
void truncate_jsonl_after_step(const std::string& path, int64_t step);

}  // namespace retort
