#include "common/config.h"

#include <unistd.h>  // defines: fsync, getpid

#include <algorithm>  // defines: std::min
#include <cstdio>     // defines: std::rename, fopen
#include <fstream>    // defines: std::ifstream
#include <sstream>    // defines: std::ostringstream

namespace retort {

namespace {

// Converts a byte offset into "line L, column C" for error messages.
std::string line_col(const std::string& text, size_t offset) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < text.size() && i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(col);
}

std::string describe(const json& j) {
  std::string s = j.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return std::string(j.type_name()) + " " + s;
}

}  // namespace

json parse_json_text(const std::string& text, const std::string& where) {
  try {
    return json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/true, /*ignore_comments=*/true);
  } catch (const json::parse_error& e) {
    throw Error(ErrorInfo{"invalid JSON", where + " (" + line_col(text, e.byte > 0 ? e.byte - 1 : 0) + ")",
                          "", "", std::string("the parser said: ") + e.what()});
  }
}

json load_json_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open the file for reading", path, "check that the path exists and is readable");
  std::ostringstream ss;
  ss << f.rdbuf();
  return parse_json_text(ss.str(), path);
}

void apply_override(json& doc, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw Error(ErrorInfo{"a config override must look like key.sub=value", "command line", "key=value",
                          quote_for_error(assignment), "for example: grpo.beta=0.04"});
  }
  std::string key = assignment.substr(0, eq);
  std::string raw = assignment.substr(eq + 1);
  json value;
  try {
    value = json::parse(raw);
  } catch (const json::parse_error&) {
    value = raw;  // a bare word such as cosine or runs/demo
  }
  json* node = &doc;
  size_t start = 0;
  while (true) {
    size_t dot = key.find('.', start);
    std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (part.empty()) {
      throw Error(ErrorInfo{"empty key component in override", "command line", "key.sub=value",
                            quote_for_error(assignment), ""});
    }
    if (!node->is_object()) {
      throw Error(ErrorInfo{"override descends into a value that is not an object", "command line",
                            "an object at " + key.substr(0, start ? start - 1 : 0), describe(*node), ""});
    }
    if (dot == std::string::npos) {
      (*node)[part] = value;
      return;
    }
    json& next = (*node)[part];
    if (next.is_null()) next = json::object();
    node = &next;
    start = dot + 1;
  }
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error("cannot create a temporary file", tmp, "check that the folder exists and is writable");
  size_t n = std::fwrite(bytes.data(), 1, bytes.size(), f);
  bool ok = n == bytes.size() && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  std::fclose(f);
  if (!ok) {
    std::remove(tmp.c_str());
    throw Error("short write (disk full?)", tmp, "free some space and retry");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error("cannot rename the temporary file into place", path, "");
  }
}

void write_json_file_atomic(const std::string& path, const json& doc, int indent) {
  write_file_atomic(path, doc.dump(indent) + "\n");
}

ConfigBinder ConfigBinder::reader(const json& node, std::string where, std::string path) {
  ConfigBinder b;
  b.in_ = &node;
  b.where_ = std::move(where);
  b.path_ = std::move(path);
  return b;
}

ConfigBinder ConfigBinder::writer(json* out, std::string path) {
  ConfigBinder b;
  b.out_ = out;
  b.path_ = std::move(path);
  if (!out->is_object()) *out = json::object();
  return b;
}

void ConfigBinder::type_error(const std::string& key, const char* expected, const json& got) const {
  throw Error(ErrorInfo{"config key '" + key + "' has the wrong type", where_, expected, describe(got),
                        "fix the value in the file or pass " + key + "=VALUE"});
}

void ConfigBinder::read_value(const json& j, bool& v, const std::string& key) {
  if (!j.is_boolean()) type_error(key, "true or false", j);
  v = j.get<bool>();
}
void ConfigBinder::read_value(const json& j, int& v, const std::string& key) {
  if (!j.is_number_integer()) type_error(key, "an integer", j);
  v = j.get<int>();
}
void ConfigBinder::read_value(const json& j, int64_t& v, const std::string& key) {
  if (!j.is_number_integer()) type_error(key, "an integer", j);
  v = j.get<int64_t>();
}
void ConfigBinder::read_value(const json& j, double& v, const std::string& key) {
  if (!j.is_number()) type_error(key, "a number", j);
  v = j.get<double>();
}
void ConfigBinder::read_value(const json& j, std::string& v, const std::string& key) {
  if (!j.is_string()) type_error(key, "a string", j);
  v = j.get<std::string>();
}

void ConfigBinder::choice(const char* key, std::string& value, const std::vector<std::string>& allowed) {
  field(key, value);
  if (!reading()) return;
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  std::string near = closest_match(value, allowed);
  throw Error(ErrorInfo{"config key '" + key_path(key) + "' has a value that is not allowed", where_,
                        "one of: " + list, quote_for_error(value),
                        near.empty() ? "pick one of the allowed values" : "did you mean '" + near + "'?"});
}

void ConfigBinder::finish() {
  if (!reading()) return;
  for (auto it = in_->begin(); it != in_->end(); ++it) {
    if (seen_.count(it.key())) continue;
    std::vector<std::string> allowed(seen_.begin(), seen_.end());
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    std::string near = closest_match(it.key(), allowed);
    throw Error(ErrorInfo{"unknown config key '" + key_path(it.key().c_str()) + "'", where_,
                          "one of: " + list, quote_for_error(it.key()),
                          near.empty() ? "remove the key or check the documentation"
                                       : "did you mean '" + near + "'?"});
  }
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = std::max<size_t>(2, word.size() / 3) + 1;
  for (const auto& c : candidates) {
    // Levenshtein distance, O(|a||b|) with one row.
    std::vector<size_t> row(c.size() + 1);
    for (size_t j = 0; j <= c.size(); ++j) row[j] = j;
    for (size_t i = 1; i <= word.size(); ++i) {
      size_t prev = row[0];
      row[0] = i;
      for (size_t j = 1; j <= c.size(); ++j) {
        size_t cur = row[j];
        row[j] = std::min({row[j] + 1, row[j - 1] + 1, prev + (word[i - 1] == c[j - 1] ? 0 : 1)});
        prev = cur;
      }
    }
    if (row[c.size()] < best_d) {
      best_d = row[c.size()];
      best = c;
    }
  }
  return best;
}

}  // namespace retort
