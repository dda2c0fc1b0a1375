// Files in tests: reading what the code under test wrote (a whole file; JSON lines of
// metrics.jsonl, chains.jsonl, eval_samples.jsonl, blank lines skipped) and writing JSON-lines
// inputs into the build folder.
#pragma once

#include <fstream>  // defines: std::ifstream, std::ofstream
#include <sstream>  // defines: std::ostringstream
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

// The whole file as bytes ("" when it cannot be opened).
inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

// Writes `rows`, one per line, to BUILD_DIR/name; returns the path.
inline std::string write_jsonl(const std::string& name, const std::vector<nlohmann::json>& rows) {
  std::string path = std::string(RETORT_BINARY_DIR) + "/" + name;
  std::ofstream f(path);
  for (const auto& r : rows) f << r.dump() << "\n";
  return path;
}
