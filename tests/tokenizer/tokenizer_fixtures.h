// Paths of the tokenizer fixtures and of ../shared/data, for the tokenizer tests.
#pragma once

#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace retort::test {

inline std::string source_path(const std::string& rel) { return std::string(RETORT_SOURCE_DIR) + "/" + rel; }
inline std::string shared_data(const std::string& rel) { return std::string(RETORT_SOURCE_DIR) + "/../shared/data/" + rel; }
inline bool file_exists(const std::string& p) { return std::ifstream(p).good(); }

inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

}  // namespace retort::test
