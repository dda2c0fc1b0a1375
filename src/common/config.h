// Typed configuration from JSON (comments allowed), with `a.b=c` command-line overrides.
//
// A config struct declares each field once, in a bind() method; the same declaration
// reads the struct from JSON (rejecting unknown keys and wrong types with an error that
// names the key, the file and the allowed keys) and writes it back (the resolved config
// saved with every run):
//
//   struct OptimConfig {
//     double lr = 3e-4;          // peak learning rate
//     std::string schedule = "cosine";
//     void bind(ConfigBinder& b) {
//       b.field("lr", lr);
//       b.choice("schedule", schedule, {"cosine", "constant"});
//     }
//   };
//   auto cfg = parse_config<OptimConfig>(json, "configs/x.json");
//
// A numeric field may carry its valid range, checked when the config is read, so that a bad
// value fails at once with one line naming the key, the value and the range:
//
//       b.field("lr", lr, Range::above(0).up_to(10));           // (0, 10]
//       b.field("dual_clip", dual_clip, Range::above(1).or_off(0));  // > 1, or 0 = off
//
// Integers are read as 64-bit and checked against the field's type before narrowing (a
// batch_size of 4294967298 is an error, not a batch of 2); every number must be finite.
//
// This file is deliberately free of Torch so that every module can use it.
#pragma once

#include <map>        // defines: std::map
#include <set>        // defines: std::set
#include <string>     // defines: std::string
#include <type_traits>
#include <vector>     // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "common/error.h"

namespace retort {

using json = nlohmann::json;

// Reads a JSON file that may contain // and /* */ comments. A syntax error names the file,
// line and column.
json load_json_file(const std::string& path);
// Parses JSON text (comments allowed); `where` names the source in errors.
json parse_json_text(const std::string& text, const std::string& where);

// Applies "a.b.c=value" to `doc`. The value is parsed as JSON when it parses (numbers,
// true/false, null, arrays, objects, quoted strings) and taken as a bare string otherwise.
// Keys are not checked here: the strict bind() that follows rejects unknown ones.
void apply_override(json& doc, const std::string& assignment);

// Writes `doc` to `path` atomically (temporary file in the same folder, then rename).
void write_json_file_atomic(const std::string& path, const json& doc, int indent = 2);

// Writes bytes to `path` atomically (temporary file in the same folder, fsync, rename).
void write_file_atomic(const std::string& path, const std::string& bytes);

class ConfigBinder;

// The valid values of a numeric config field: an interval with open or closed ends, and
// optionally one extra value that means "off" (e.g. 0 = no clipping).
struct Range {
  double lo = -1e308, hi = 1e308;  // beyond +-1e308 = unbounded
  bool lo_open = false, hi_open = false;
  bool has_off = false;
  double off = 0;

  static Range at_least(double v) { Range r; r.lo = v; return r; }                       // [v, inf)
  static Range above(double v) { Range r; r.lo = v; r.lo_open = true; return r; }        // (v, inf)
  static Range between(double a, double b) { Range r; r.lo = a; r.hi = b; return r; }   // [a, b]
  Range up_to(double v) const { Range r = *this; r.hi = v; r.hi_open = false; return r; }  // ..., v]
  Range below(double v) const { Range r = *this; r.hi = v; r.hi_open = true; return r; }   // ..., v)
  Range or_off(double v) const { Range r = *this; r.has_off = true; r.off = v; return r; }  // or exactly v ("off")

  bool contains(double v) const;
  std::string describe() const;  // "> 1, or 0 (off)", "in [0, 1)", ">= 1"
};

template <class T, class = void>
struct HasBind : std::false_type {};
template <class T>
struct HasBind<T, std::void_t<decltype(std::declval<T&>().bind(std::declval<ConfigBinder&>()))>>
    : std::true_type {};

class ConfigBinder {
 public:
  // Reading: `node` must be an object; `where` is the file, `path` the key prefix ("sft.optim").
  static ConfigBinder reader(const json& node, std::string where, std::string path);
  // Writing: fields are stored into `out`, which becomes an object.
  static ConfigBinder writer(json* out, std::string path);

  bool reading() const { return in_ != nullptr; }

  template <class T>
  void field(const char* key, T& value) {
    if (reading()) {
      seen_.insert(key);
      auto it = in_->find(key);
      if (it == in_->end()) return;  // keep the default
      read_value(*it, value, key_path(key));
    } else {
      write_value((*out_)[key], value, key_path(key));
    }
  }

  // A number restricted to `range` (see Range); checked when reading.
  template <class T>
  void field(const char* key, T& value, const Range& range) {
    static_assert(std::is_arithmetic<T>::value, "a Range applies to numbers");
    field(key, value);
    if (reading()) check_range(key, static_cast<double>(value), range);
  }

  // A string restricted to `allowed`; anything else names the allowed values.
  void choice(const char* key, std::string& value, const std::vector<std::string>& allowed);

  // Throws when the object holds keys that no field() declared.
  void finish();

 private:
  ConfigBinder() = default;
  std::string key_path(const char* key) const { return path_.empty() ? key : path_ + "." + key; }
  void check_range(const char* key, double value, const Range& range) const;
  [[noreturn]] void type_error(const std::string& key, const char* expected, const json& got) const;

  void read_value(const json& j, bool& v, const std::string& key);
  void read_value(const json& j, int& v, const std::string& key);
  void read_value(const json& j, int64_t& v, const std::string& key);
  void read_value(const json& j, double& v, const std::string& key);
  void read_value(const json& j, std::string& v, const std::string& key);
  void read_value(const json& j, json& v, const std::string&) { v = j; }
  template <class T>
  void read_value(const json& j, std::vector<T>& v, const std::string& key) {
    if (!j.is_array()) type_error(key, "an array", j);
    v.clear();
    v.resize(j.size());
    for (size_t i = 0; i < j.size(); ++i) read_value(j[i], v[i], key + "[" + std::to_string(i) + "]");
  }
  template <class T>
  void read_value(const json& j, std::map<std::string, T>& v, const std::string& key) {
    if (!j.is_object()) type_error(key, "an object", j);
    v.clear();
    for (auto it = j.begin(); it != j.end(); ++it) read_value(it.value(), v[it.key()], key + "." + it.key());
  }
  template <class T, std::enable_if_t<HasBind<T>::value, int> = 0>
  void read_value(const json& j, T& v, const std::string& key) {
    if (!j.is_object()) type_error(key, "an object", j);
    ConfigBinder sub = reader(j, where_, key);
    v.bind(sub);
    sub.finish();
  }

  template <class T, std::enable_if_t<!HasBind<T>::value, int> = 0>
  void write_value(json& j, const T& v, const std::string&) { j = v; }
  template <class T>
  void write_value(json& j, const std::vector<T>& v, const std::string& key) {
    j = json::array();
    for (size_t i = 0; i < v.size(); ++i) {
      json e;
      write_value(e, v[i], key);
      j.push_back(std::move(e));
    }
  }
  template <class T>
  void write_value(json& j, const std::map<std::string, T>& v, const std::string& key) {
    j = json::object();
    for (const auto& kv : v) write_value(j[kv.first], kv.second, key);
  }
  template <class T, std::enable_if_t<HasBind<T>::value, int> = 0>
  void write_value(json& j, const T& v, const std::string& key) {
    j = json::object();
    ConfigBinder sub = writer(&j, key);
    const_cast<T&>(v).bind(sub);  // bind() only reads the fields in write mode
  }

  const json* in_ = nullptr;
  json* out_ = nullptr;
  std::string where_;
  std::string path_;
  std::set<std::string> seen_;
};

// Parses a whole config struct from `doc`; `where` names the file in errors.
template <class T>
T parse_config(const json& doc, const std::string& where, const std::string& path = "") {
  if (!doc.is_object()) {
    throw Error(ErrorInfo{"the config must be a JSON object", where, "an object", doc.type_name(),
                          "wrap the settings in { ... }"});
  }
  T cfg;
  ConfigBinder b = ConfigBinder::reader(doc, where, path);
  cfg.bind(b);
  b.finish();
  return cfg;
}

template <class T>
json config_to_json(const T& cfg) {
  json out = json::object();
  ConfigBinder b = ConfigBinder::writer(&out, "");
  const_cast<T&>(cfg).bind(b);
  return out;
}

// A config as a resolved, comparable document: `doc` parsed as a T (every default filled in,
// so spelling out a default is no change) and written back; `doc` itself when it does not
// parse (it then differs from any config that does).
template <class T>
json canonical_config(const json& doc) {
  try {
    return config_to_json(parse_config<T>(doc, "config"));
  } catch (const Error&) {
    return doc;
  }
}

// "steps: 1600 then, 7 now; loss.beta: 0.05 then, 0.1 now": at most four differences between
// two configs, each named by its key under `prefix`; "" when they are equal.
std::string config_differences(const json& then, const json& now, const std::string& prefix = "");

// The closest of `candidates` to `word` by edit distance, or "" when none is close.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace retort
