#include "data/jsonl.h"

#include <cstdint>  // defines: int64_t

#include "common/error.h"  // defines: retort::Error, quote_for_error

namespace retort {

void for_each_jsonl_row(std::istream& in, const std::string& path,
                        const std::function<void(const nlohmann::json& value, const std::string& where)>& row) {
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty() || line.find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string where = path + ":" + std::to_string(n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(ErrorInfo{"the line is not valid JSON", where, "one JSON object per line", quote_for_error(line),
                            std::string("the parser said: ") + e.what()});
    }
    row(j, where);
  }
}

const nlohmann::json* find_string_field(const nlohmann::json& j, std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    auto it = j.find(k);
    if (it != j.end() && it->is_string()) return &*it;
  }
  return nullptr;
}

}  // namespace retort
