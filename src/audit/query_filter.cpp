// The filters of `retort audit` (--step, --prompt, --passed/--failed, --reward-min/max,
// --truncated, --sandbox-status, --grep with PCRE2, --flag, --tool-status,
// --min-tool-calls/--max-tool-calls). See query.h.
#include "audit/query.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>  // defines: pcre2_compile, pcre2_match, pcre2_jit_*

#include <algorithm>  // defines: std::find
#include <cstdlib>    // defines: std::strtoll
#include <mutex>      // defines: std::mutex

#include "audit/query_internal.h"  // defines: trim, fmt
#include "common/error.h"          // defines: retort::Error

namespace retort::audit {

using internal::fmt;
using internal::trim;

// ---------------------------------------------------------------------------------------
// Regex (PCRE2)

class Regex {
 public:
  Regex(const std::string& pattern, bool ignore_case) {
    int err = 0;
    PCRE2_SIZE off = 0;
    uint32_t flags = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | (ignore_case ? PCRE2_CASELESS : 0);
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), flags, &err, &off, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw Error(ErrorInfo{"the --grep pattern does not compile", "--grep", "a PCRE2 regular expression",
                            quote_for_error(pattern) + " (at offset " + std::to_string(off) + ": " +
                                reinterpret_cast<char*>(msg) + ")",
                            "escape special characters with \\, e.g. --grep '\\\\boxed\\{'"});
    }
    jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
    data_ = pcre2_match_data_create_from_pattern(code_, nullptr);
    ctx_ = pcre2_match_context_create(nullptr);
    stack_ = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(ctx_, nullptr, stack_);
  }
  ~Regex() {
    pcre2_jit_stack_free(stack_);
    pcre2_match_context_free(ctx_);
    pcre2_match_data_free(data_);
    pcre2_code_free(code_);
  }

  bool search(std::string_view s, const std::string& where) const {
    std::lock_guard<std::mutex> lock(mu_);  // match data and JIT stack are per call site
    auto* p = reinterpret_cast<PCRE2_SPTR>(s.data());
    int rc = jit_ ? pcre2_jit_match(code_, p, s.size(), 0, 0, data_, ctx_) : pcre2_match(code_, p, s.size(), 0, 0, data_, ctx_);
    if (rc >= 0) return true;
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    throw Error(ErrorInfo{"the --grep pattern failed on a chain", where, "a match or no match",
                          std::string("PCRE2 error: ") + reinterpret_cast<char*>(msg),
                          "simplify the pattern (nested repetitions backtrack without end on long texts)"});
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_data* data_ = nullptr;
  pcre2_match_context* ctx_ = nullptr;
  pcre2_jit_stack* stack_ = nullptr;
  bool jit_ = false;
  mutable std::mutex mu_;
};

// ---------------------------------------------------------------------------------------
// Filters

void parse_step_range(const std::string& text, ChainFilter& f) {
  auto bad = [&]() -> Error {
    return Error(ErrorInfo{"bad step range", "--step", "A:B, A:, :B or A (inclusive integers)", quote_for_error(text),
                           "e.g. --step 10:20 for steps 10 to 20"});
  };
  auto parse = [&](const std::string& s) -> int64_t {
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0') throw bad();
    return v;
  };
  size_t colon = text.find(':');
  if (colon == std::string::npos) {
    f.step_min = f.step_max = parse(trim(text));
    return;
  }
  std::string a = trim(text.substr(0, colon)), b = trim(text.substr(colon + 1));
  if (a.empty() && b.empty()) throw bad();
  f.step_min = a.empty() ? std::nullopt : std::optional<int64_t>(parse(a));
  f.step_max = b.empty() ? std::nullopt : std::optional<int64_t>(parse(b));
  if (f.step_min && f.step_max && *f.step_min > *f.step_max)
    throw Error(ErrorInfo{"empty step range", "--step", "A <= B", quote_for_error(text), "e.g. --step 10:20"});
}

namespace {
const std::vector<std::string>& known_statuses() {
  // sandbox/job_json.cpp status names, plus "deadline" (the code verifier stopped waiting).
  static const std::vector<std::string> k = {"ok", "runtime_error", "compile_error", "time_limit", "memory_limit",
                                             "output_limit", "sandbox_error", "deadline"};
  return k;
}
std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}
}  // namespace

const std::vector<std::string>& tool_statuses() {
  // rewards/tool_calls.h: the sandbox's status names, and "budget" (the call was not run).
  static const std::vector<std::string> k = {"ok", "runtime_error", "compile_error", "time_limit", "memory_limit",
                                             "output_limit", "sandbox_error", "budget"};
  return k;
}

ChainQuery::ChainQuery(ChainFilter filter, FlagOptions flag_options)
    : filter_(std::move(filter)), flag_options_(flag_options) {
  if (filter_.step_min && filter_.step_max && *filter_.step_min > *filter_.step_max)
    throw Error(ErrorInfo{"empty step range", "--step", "min <= max",
                          std::to_string(*filter_.step_min) + ":" + std::to_string(*filter_.step_max), ""});
  if (filter_.reward_min && filter_.reward_max && *filter_.reward_min > *filter_.reward_max)
    throw Error(ErrorInfo{"empty reward range", "--reward-min/--reward-max", "min <= max",
                          fmt("%g", *filter_.reward_min) + " > " + fmt("%g", *filter_.reward_max), ""});
  for (const auto& s : filter_.sandbox_status)
    if (std::find(known_statuses().begin(), known_statuses().end(), s) == known_statuses().end())
      throw Error(ErrorInfo{"unknown sandbox status", "--sandbox-status", "one of: " + join(known_statuses()),
                            quote_for_error(s), "statuses are lower case with underscores"});
  for (const auto& s : filter_.tool_status)
    if (std::find(tool_statuses().begin(), tool_statuses().end(), s) == tool_statuses().end())
      throw Error(ErrorInfo{"unknown tool-call status", "--tool-status", "one of: " + join(tool_statuses()),
                            quote_for_error(s), "statuses are lower case with underscores"});
  if (filter_.tool_calls_min && *filter_.tool_calls_min < 0)
    throw Error(ErrorInfo{"negative tool-call count", "--min-tool-calls", ">= 0", std::to_string(*filter_.tool_calls_min), ""});
  if (filter_.tool_calls_max && *filter_.tool_calls_max < 0)
    throw Error(ErrorInfo{"negative tool-call count", "--max-tool-calls", ">= 0 (0 = chains without tool calls)",
                          std::to_string(*filter_.tool_calls_max), ""});
  if (filter_.tool_calls_min && filter_.tool_calls_max && *filter_.tool_calls_min > *filter_.tool_calls_max)
    throw Error(ErrorInfo{"empty tool-call range", "--min-tool-calls/--max-tool-calls", "min <= max",
                          std::to_string(*filter_.tool_calls_min) + " > " + std::to_string(*filter_.tool_calls_max), ""});
  for (const auto& code : filter_.flags)
    if (!find_flag_kind(code)) {
      std::vector<std::string> names;
      for (const auto& k : flag_kinds()) names.push_back(k.code);
      throw Error(ErrorInfo{"unknown flag", "--flag", "one of: " + join(names), quote_for_error(code), ""});
    }
  for (const auto& lists : {filter_.passed, filter_.failed})
    for (const auto& name : lists)
      if (name.empty()) throw Error(ErrorInfo{"empty verifier name", "--passed/--failed", "a verifier name or 'all'", "\"\"", ""});
  if (!filter_.grep.empty()) regex_ = std::make_unique<Regex>(filter_.grep, filter_.grep_ignore_case);
}

ChainQuery::~ChainQuery() = default;

bool ChainQuery::matches(const ChainView& c, const json& chain) const {
  for (const auto& v : c.verdicts) {
    auto [it, inserted] = seen_.emplace(v.name, true);
    if (inserted) seen_order_.push_back(v.name);
  }
  const ChainFilter& f = filter_;
  if (f.step_min && c.step < *f.step_min) return false;
  if (f.step_max && c.step > *f.step_max) return false;
  if (!f.prompt_ids.empty() && std::find(f.prompt_ids.begin(), f.prompt_ids.end(), c.prompt_id) == f.prompt_ids.end())
    return false;
  if (f.truncated && c.truncated != *f.truncated) return false;
  if (f.reward_min && !(c.reward >= *f.reward_min)) return false;  // NaN never in range
  if (f.reward_max && !(c.reward <= *f.reward_max)) return false;
  for (const auto& name : f.passed) {
    if (name == kCombined) {
      if (!c.passed_all()) return false;
      continue;
    }
    const Verdict* v = c.verdict(name);
    if (!v || !v->applicable() || !v->passed) return false;
  }
  for (const auto& name : f.failed) {
    if (name == kCombined) {
      bool any_applicable = false;
      for (const auto& v : c.verdicts) any_applicable = any_applicable || v.applicable();
      if (!any_applicable || c.passed_all()) return false;
      continue;
    }
    const Verdict* v = c.verdict(name);
    if (!v || !v->applicable() || v->passed) return false;
  }
  if (!f.sandbox_status.empty()) {
    bool hit = false;
    for (const auto& s : c.sandbox_statuses())
      hit = hit || std::find(f.sandbox_status.begin(), f.sandbox_status.end(), s) != f.sandbox_status.end();
    if (!hit) return false;
  }
  const int64_t calls = static_cast<int64_t>(c.tool_calls.size());
  if (f.tool_calls_min && calls < *f.tool_calls_min) return false;
  if (f.tool_calls_max && calls > *f.tool_calls_max) return false;
  if (!f.tool_status.empty()) {
    bool hit = false;
    for (const auto& t : c.tool_calls)
      hit = hit || std::find(f.tool_status.begin(), f.tool_status.end(), t.status) != f.tool_status.end();
    if (!hit) return false;
  }
  if (!f.flags.empty()) {
    bool hit = false;
    for (const auto& fl : chain_flags(c, chain, flag_options_))
      hit = hit || std::find(f.flags.begin(), f.flags.end(), fl.code) != f.flags.end();
    if (!hit) return false;
  }
  if (regex_) {
    auto it = chain.find("text");
    std::string_view text = it != chain.end() && it->is_string() ? std::string_view(it->get_ref<const std::string&>())
                                                                 : std::string_view();
    if (!regex_->search(text, "chain step " + std::to_string(c.step) + " prompt " + c.prompt_id)) return false;
  }
  return true;
}

std::vector<std::string> ChainQuery::unknown_verifiers() const {
  std::vector<std::string> out;
  for (const auto& lists : {filter_.passed, filter_.failed})
    for (const auto& name : lists)
      if (name != kCombined && !seen_.count(name) && std::find(out.begin(), out.end(), name) == out.end())
        out.push_back(name);
  return out;
}

}  // namespace retort::audit
