// Paths of the tokenizer fixtures and of ../shared/data, for the tokenizer tests.
#pragma once

#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "jsonl_files.h"  // defines: read_jsonl, write_jsonl
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace retort::test {

inline std::string source_path(const std::string& rel) { return std::string(RETORT_SOURCE_DIR) + "/" + rel; }
inline std::string shared_data(const std::string& rel) { return std::string(RETORT_SOURCE_DIR) + "/../shared/data/" + rel; }
inline bool file_exists(const std::string& p) { return std::ifstream(p).good(); }

using ::read_jsonl;

}  // namespace retort::test
