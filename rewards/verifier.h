// The verifier contract (DESIGN.md section 3): a verifier scores one completion of one
// prompt against its dataset row. This header is the whole plugin API: a shared library
// includes it, defines Verifier subclasses and registers factories for them.
//
//   struct Sample { prompt, completion, row }   // row = the dataset record (answer, tests, ...)
//   struct Score  { reward, passed, detail }    // detail goes to the audit log
//   reward = NaN means "not applicable here" (e.g. the code verifier on a math prompt);
//   combine.h skips such entries in the weighted sum.
//
// Rules every verifier follows:
//   - verify() is const and thread-safe: the runner calls it from many threads at once.
//   - A failure of the graded program or answer is a Score (reward 0, detail says why), never
//     an exception. Exceptions are for misconfiguration (bad args), raised by the factory.
//   - The detail says what was extracted and why it failed; it is JSON and kept small
//     (long strings are truncated with truncate_for_detail).
#pragma once

#include <cmath>        // defines: std::isnan
#include <cstdint>      // defines: int64_t
#include <functional>   // defines: std::function
#include <limits>       // defines: std::numeric_limits
#include <map>          // defines: std::map
#include <memory>       // defines: std::shared_ptr
#include <string>       // defines: std::string
#include <string_view>  // defines: std::string_view
#include <vector>       // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort::sandbox {
class Executor;
}

namespace retort::rewards {

using json = nlohmann::json;

struct Sample {
  std::string_view prompt;      // the prompt as the policy saw it (chat template applied)
  std::string_view completion;  // the sampled text
  const json& row;              // the dataset record: "answer", "tests", "test_list", ...
  int64_t completion_tokens = -1;  // length in tokens when the sampler knows it (length rewards); -1 = unknown
};

struct Score {
  double reward = 0;   // NaN = not applicable
  bool passed = false; // the verifier's own notion of success (answer correct, all tests passed)
  json detail = json::object();

  static Score not_applicable(std::string why) {
    Score s;
    s.reward = std::numeric_limits<double>::quiet_NaN();
    s.detail = {{"not_applicable", std::move(why)}};
    return s;
  }
  bool applicable() const { return !std::isnan(reward); }
};

class Verifier {
 public:
  virtual ~Verifier() = default;
  virtual Score verify(const Sample& sample) const = 0;
  // True when verify() mostly waits (sandbox jobs, an external process) instead of
  // computing: the runner then calls it from its waiting threads, not from the CPU arena.
  virtual bool waits() const { return false; }
};

// Shared resources handed to factories. The sandbox pool is created on first use, once per
// run, and shared by every verifier that needs it.
struct VerifierContext {
  std::function<std::shared_ptr<sandbox::Executor>()> executor;
};

using VerifierFactory = std::function<std::shared_ptr<Verifier>(const json& args, const VerifierContext& ctx)>;

// Name → factory. Built-ins are added by register_builtin_verifiers (registry.cpp), plugins
// by their retort_register_verifiers entry point. The part a plugin calls (add) is inline,
// so a plugin library needs no symbol of retort_rewards.
class Registry {
 public:
  // Adds a verifier. A name already taken is remembered and reported by check() (called by
  // the plugin loader and the built-in list), which throws retort::Error naming it.
  void add(const std::string& name, const std::string& description, VerifierFactory factory) {
    if (entries_.count(name)) {
      duplicates_.push_back(name);
      return;
    }
    entries_[name] = Entry{description, std::move(factory)};
  }
  bool contains(const std::string& name) const { return entries_.count(name) > 0; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& kv : entries_) out.push_back(kv.first);
    return out;
  }
  // Throws retort::Error when add() saw a name twice; `source` names who added them.
  void check(const std::string& source) const;
  // Builds one verifier; an unknown name throws retort::Error listing the known names;
  // bad args throw from the factory, naming the key.
  std::shared_ptr<Verifier> create(const std::string& name, const json& args, const VerifierContext& ctx) const;

 private:
  struct Entry {
    std::string description;
    VerifierFactory factory;
  };
  std::map<std::string, Entry> entries_;
  std::vector<std::string> duplicates_;
};

// The one explicit list of built-in verifiers.
void register_builtin_verifiers(Registry& registry);

// A registry holding the built-ins.
Registry builtin_registry();

// Cuts a string for the detail log: at most `max_chars`, with a note of how much was cut.
inline std::string truncate_for_detail(std::string_view s, size_t max_chars = 400) {
  if (s.size() <= max_chars) return std::string(s);
  return std::string(s.substr(0, max_chars)) + "...[" + std::to_string(s.size() - max_chars) + " more chars]";
}

}  // namespace retort::rewards

// The entry point a plugin shared library exports (see rewards/examples/plugin_verifier.cpp).
extern "C" {
// extern "C" void retort_register_verifiers(retort::rewards::Registry& registry);
typedef void (*retort_register_verifiers_fn)(retort::rewards::Registry& registry);
}
