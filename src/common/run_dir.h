// The run directory (DESIGN.md section 5): runs/NAME/ with config.resolved.json,
// metrics.jsonl, chains.jsonl, checkpoints/step-N/, report.html.
#pragma once

#include <cstdint>  // defines: int64_t
#include <string>   // defines: std::string

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort {

class RunDir {
 public:
  // Creates the folder (and parents) when missing; throws retort::Error when it cannot.
  explicit RunDir(std::string path);

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  std::string checkpoint(int64_t step) const { return path_ + "/checkpoints/step-" + std::to_string(step); }

  // Saves the resolved config (every default filled in, every override applied), atomically.
  void save_resolved_config(const nlohmann::json& resolved) const;

 private:
  std::string path_;
};

// mkdir -p; throws retort::Error naming the path on failure.
void make_dirs(const std::string& path);

// Resume: drops the lines of a JSON-lines log (metrics.jsonl, chains.jsonl) whose "step" is
// greater than `step` (what a killed run wrote after its last checkpoint) and any line cut by
// the kill, atomically (temporary file + rename). A missing file is left missing.
void truncate_jsonl_after_step(const std::string& path, int64_t step);

}  // namespace retort
