#include "tokenizer/text_io.h"

#include <fstream>  // defines: std::ifstream

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "common/error.h"
#include "tokenizer/tokenizer.h"

namespace retort {

using nlohmann::json;

int64_t tokenize_jsonl(const Tokenizer& tok, std::istream& in, std::ostream& out, const std::string& where) {
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    std::string here = where + ":" + std::to_string(n);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error& e) {
      throw Error(ErrorInfo{"the line is not valid JSON", here, "{\"text\": \"...\"}", quote_for_error(line),
                            std::string("the parser said: ") + e.what()});
    }
    if (!j.is_object() || !j.contains("text") || !j["text"].is_string()) {
      throw Error(ErrorInfo{"the line has no string field 'text'", here, "{\"text\": \"...\"}", quote_for_error(line), ""});
    }
    out << json{{"ids", tok.encode(j["text"].get_ref<const std::string&>())}}.dump() << '\n';
  }
  out.flush();
  return n;
}

std::vector<std::string> read_training_texts(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open the training text for reading", path, "check the path");
  std::vector<std::string> texts;
  std::string line;
  bool jsonl = path.size() > 6 && path.substr(path.size() - 6) == ".jsonl";
  int64_t n = 0;
  static const char* const kFields[] = {"text", "prompt", "completion", "problem", "question", "reasoning",
                                        "generation", "answer", "solution"};
  while (std::getline(f, line)) {
    ++n;
    if (!jsonl) {
      texts.push_back(line + "\n");
      continue;
    }
    if (line.empty()) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error& e) {
      throw Error(ErrorInfo{"the line is not valid JSON", path + ":" + std::to_string(n), "one JSON object per line",
                            quote_for_error(line), ""});
    }
    if (!j.is_object()) continue;
    for (const char* k : kFields)
      if (j.contains(k) && j[k].is_string()) texts.push_back(j[k].get<std::string>());
    if (j.contains("messages") && j["messages"].is_array())
      for (const auto& m : j["messages"])
        if (m.is_object() && m.contains("content") && m["content"].is_string()) texts.push_back(m["content"].get<std::string>());
  }
  return texts;
}

}  // namespace retort
