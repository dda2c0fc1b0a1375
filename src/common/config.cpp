#include "common/config.h"

#include <unistd.h>  // defines: fsync, getpid

#include <algorithm>  // defines: std::min
#include <cmath>      // defines: std::isfinite, std::fabs
#include <limits>     // defines: std::numeric_limits
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
// Integers: as 64-bit first, then checked against the field's type, so that nothing wraps.
void ConfigBinder::read_value(const json& j, int& v, const std::string& key) {
  int64_t wide = 0;
  read_value(j, wide, key);
  if (wide < std::numeric_limits<int>::min() || wide > std::numeric_limits<int>::max()) {
    throw Error(ErrorInfo{"config key '" + key + "' is out of range", where_,
                          "an integer in [" + std::to_string(std::numeric_limits<int>::min()) + ", " +
                              std::to_string(std::numeric_limits<int>::max()) + "]",
                          j.dump(), "fix the value in the file or pass " + key + "=VALUE"});
  }
  v = static_cast<int>(wide);
}
void ConfigBinder::read_value(const json& j, int64_t& v, const std::string& key) {
  if (!j.is_number_integer()) type_error(key, "an integer", j);
  if (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    throw Error(ErrorInfo{"config key '" + key + "' is out of range", where_, "an integer below 2^63", j.dump(),
                          "fix the value in the file or pass " + key + "=VALUE"});
  }
  v = j.get<int64_t>();
}
void ConfigBinder::read_value(const json& j, double& v, const std::string& key) {
  if (!j.is_number()) type_error(key, "a number", j);
  v = j.get<double>();
  if (!std::isfinite(v)) {
    throw Error(ErrorInfo{"config key '" + key + "' is not a finite number", where_, "a finite number", j.dump(),
                          "fix the value in the file or pass " + key + "=VALUE"});
  }
}

namespace {
std::string number_text(double v) {
  if (v == static_cast<double>(static_cast<int64_t>(v)) && std::fabs(v) < 1e15) return std::to_string(static_cast<int64_t>(v));
  std::ostringstream o;
  o << v;
  return o.str();
}
}  // namespace

bool Range::contains(double v) const {
  if (has_off && v == off) return true;
  if (lo > -1e308 && (lo_open ? !(v > lo) : !(v >= lo))) return false;
  if (hi < 1e308 && (hi_open ? !(v < hi) : !(v <= hi))) return false;
  return true;
}

std::string Range::describe() const {
  std::string s;
  const bool has_lo = lo > -1e308, has_hi = hi < 1e308;
  if (has_lo && has_hi) {
    s = std::string("in ") + (lo_open ? "(" : "[") + number_text(lo) + ", " + number_text(hi) + (hi_open ? ")" : "]");
  } else if (has_lo) {
    s = std::string(lo_open ? "> " : ">= ") + number_text(lo);
  } else if (has_hi) {
    s = std::string(hi_open ? "< " : "<= ") + number_text(hi);
  } else {
    s = "any number";
  }
  if (has_off) s += ", or " + number_text(off) + " (off)";
  return s;
}

void ConfigBinder::check_range(const char* key, double value, const Range& range) const {
  if (range.contains(value)) return;
  throw Error(ErrorInfo{"config key '" + key_path(key) + "' is out of range", where_, range.describe(), number_text(value),
                        "fix the value in the file or pass " + key_path(key) + "=VALUE"});
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

std::string config_differences(const json& then, const json& now, const std::string& prefix) {
  auto shown = [](const json& doc, const std::string& pointer) -> std::string {
    const json::json_pointer ptr(pointer);
    if (!doc.contains(ptr)) return "absent";
    std::string v = doc.at(ptr).dump();
    return v.size() > 60 ? v.substr(0, 57) + "..." : v;
  };
  const json patch = json::diff(then, now);
  std::string out;
  size_t n = 0;
  for (const auto& op : patch) {
    const std::string pointer = op.at("path").get<std::string>();
    if (n < 4) {
      std::string key = prefix;
      for (char c : pointer.substr(pointer.empty() ? 0 : 1)) key += (c == '/') ? '.' : c;
      if (!out.empty()) out += "; ";
      out += key + ": " + shown(then, pointer) + " then, " + shown(now, pointer) + " now";
    }
    ++n;
  }
  if (n > 4) out += "; and " + std::to_string(n - 4) + " more";
  return out;
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
