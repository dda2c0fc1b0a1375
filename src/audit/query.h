// Audit queries over a run's chains.jsonl: a streaming reader, filters, summaries and
// reward-hacking flags. What `retort audit RUN_DIR` prints and report.html shows.
//
// It is deliberately not an index or a database: chains.jsonl can hold gigabytes, so every
// query is one pass over the file, keeping only what a summary needs (counters per step,
// per verifier, per prompt; one int per chain for the length quantiles). No Torch.
//
// The chain line (written by the GRPO trainer) is:
//   {"step", "prompt_id", "group", "sample", "prompt", "text", "reasoning", "answer",
//    "verifiers": {NAME: {"reward": number|null (null = not applicable), "passed", "detail"}},
//    "reward", "advantage", "kl", "length", "truncated",
//    "tool_calls": [{"code", "observation", "status", "wall_s", "peak_memory_kb", "truncated", ...}]}
// ("tool_calls" only in chains that called a tool; a chain without it has made no call).
#pragma once

#include <cstdint>        // defines: int64_t
#include <fstream>        // defines: std::ifstream
#include <map>            // defines: std::map
#include <memory>         // defines: std::unique_ptr
#include <optional>       // defines: std::optional
#include <string>         // defines: std::string
#include <string_view>    // defines: std::string_view
#include <unordered_map>  // defines: std::unordered_map
#include <vector>         // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort::audit {

using json = nlohmann::json;

// The name that --passed/--failed use for the combined verdict: every applicable verifier
// passed (and at least one was applicable).
inline constexpr const char* kCombined = "all";

// ---------------------------------------------------------------------------------------
// Reading JSON lines

// Reads a JSON-lines file one object at a time. Blank lines are skipped. A last line that
// does not parse is what a killed writer leaves: it is skipped with a warning (counted in
// cut_lines()). Any other line that does not parse, or is not an object, throws
// retort::Error naming file:line.
class JsonlReader {
 public:
  explicit JsonlReader(std::string path);
  // The next object and its raw text; false at the end of the file.
  bool next(json& value, std::string& raw);
  size_t line() const { return line_; }  // 1-based line number of the last object returned
  const std::string& path() const { return path_; }
  size_t cut_lines() const { return cut_lines_; }

 private:
  std::string path_;
  std::ifstream in_;
  size_t line_ = 0;
  size_t cut_lines_ = 0;
};

// ---------------------------------------------------------------------------------------
// One chain, typed

struct Verdict {
  std::string name;
  std::optional<double> reward;  // nullopt = not applicable to this chain
  bool passed = false;
  const json* detail = nullptr;  // points into the chain's json; an empty object when absent
  bool applicable() const { return reward.has_value(); }
};

// One tool call of a chain (its chains.jsonl record, rewards/tool_calls.h's ToolCallRecord).
struct ToolCallView {
  std::string status;          // ok | runtime_error | time_limit | memory_limit | output_limit | sandbox_error | budget
  double wall_s = 0;           // sandbox wall time of the run
  int64_t peak_memory_kb = 0;
  bool truncated = false;      // the observation was cut at the token limit
  const json* record = nullptr;  // points into the chain's json: "code", "observation", ...
  std::string code() const;         // "" when absent
  std::string observation() const;  // "" when absent
};

// The fields the queries read, checked once per line. Required: step, prompt_id,
// verifiers, reward. Optional fields take the defaults below; a field of the wrong type
// throws retort::Error naming `where` (file:line).
struct ChainView {
  int64_t step = 0;
  std::string prompt_id;
  int64_t group = 0, sample = 0;
  double reward = 0;           // NaN when the line has null
  double advantage = 0;
  std::optional<double> kl;
  int64_t length = -1;         // completion tokens; -1 when the line has none
  bool truncated = false;
  std::vector<Verdict> verdicts;  // in the order of the line's "verifiers" object
  std::vector<ToolCallView> tool_calls;  // in call order; empty when the line has no "tool_calls"

  // Every applicable verifier passed and at least one was applicable.
  bool passed_all() const;
  // The verdict of `name`; nullptr when the chain has no such verifier.
  const Verdict* verdict(const std::string& name) const;
  // Sandbox statuses seen in the verifiers' details: "sandbox_status", first_failure's
  // "status" (which is "ok" for a wrong answer and "deadline" when the verifier gave up),
  // and "ok" for a code verdict that ran every test without a failure.
  std::vector<std::string> sandbox_statuses() const;
};

ChainView view_chain(const json& chain, const std::string& where);

// Strings of the chain with "" for a missing or non-string field.
std::string chain_text(const json& chain, const char* key);

// ---------------------------------------------------------------------------------------
// Reward-hacking and quality flags

struct FlagOptions {
  int64_t short_reasoning_chars = 20;  // reasoning shorter than this (trimmed) counts as missing
  double high_reward = 0.5;            // "high reward": combined reward at or above this
  int ngram = 6;                       // word n-gram length for the repetition flag
  double repeated_fraction = 0.3;      // flag when this fraction of the n-grams are repeats
  int64_t min_script_letters = 8;      // letters of a second script before "mixed languages"
  int repeated_answer_prompts = 3;     // an answer given verbatim to this many prompts is listed
};

struct FlagKind {
  const char* code;         // "empty_reasoning"
  const char* title;        // "high reward, no reasoning"
  const char* explanation;  // one sentence: what it is and why it may be reward hacking
};
// Every per-chain flag, in display order.
const std::vector<FlagKind>& flag_kinds();
const FlagKind* find_flag_kind(const std::string& code);

struct Flag {
  std::string code;  // a FlagKind code
  std::string why;   // this chain's evidence ("reasoning has 3 characters, reward 1.00")
};

// True when a Python program does nothing but print constants: every statement is
// print(...) of number, string (not f-string), True/False/None literals, keyword arguments
// included (`print(42)`, `print("42", end="")`); any operator, name or other call is not.
bool prints_only_constants(std::string_view code);

// The per-chain flags. Thread-safe; no state across chains (repeated answers across prompts
// are found by Summary).
std::vector<Flag> chain_flags(const ChainView& c, const json& chain, const FlagOptions& opt);

// ---------------------------------------------------------------------------------------
// Filters

struct ChainFilter {
  std::optional<int64_t> step_min, step_max;  // inclusive
  std::vector<std::string> prompt_ids;         // any of these
  std::vector<std::string> passed;             // each must have passed (kCombined = all of them)
  std::vector<std::string> failed;             // each must be applicable and not passed
  std::optional<double> reward_min, reward_max;  // inclusive, on the combined reward
  std::optional<bool> truncated;
  std::vector<std::string> sandbox_status;     // any of these (ChainView::sandbox_statuses)
  std::string grep;                            // PCRE2 (UTF) searched in the completion text
  bool grep_ignore_case = false;
  std::vector<std::string> flags;              // any of these flag codes
  std::vector<std::string> tool_status;        // some call ended with any of these (tool_statuses())
  std::optional<int64_t> tool_calls_min, tool_calls_max;  // inclusive, on the number of tool calls
};

// The statuses a tool call can end with (rewards/tool_calls.h), for --tool-status.
const std::vector<std::string>& tool_statuses();

// "10:20", "10:", ":20", "7" -> inclusive step bounds; throws retort::Error otherwise.
void parse_step_range(const std::string& text, ChainFilter& f);

class Regex;  // PCRE2, defined in query.cpp

// A filter compiled once (the regex) and applied to every line.
class ChainQuery {
 public:
  ChainQuery(ChainFilter filter, FlagOptions flag_options = {});
  ~ChainQuery();
  ChainQuery(const ChainQuery&) = delete;
  ChainQuery& operator=(const ChainQuery&) = delete;

  bool matches(const ChainView& c, const json& chain) const;
  const ChainFilter& filter() const { return filter_; }

  // Verifier names the filter mentions (--passed/--failed) that no chain seen by matches()
  // carried: a misspelt name matches nothing, so the caller says so.
  std::vector<std::string> unknown_verifiers() const;
  const std::vector<std::string>& seen_verifiers() const { return seen_order_; }

 private:
  ChainFilter filter_;
  FlagOptions flag_options_;
  std::unique_ptr<Regex> regex_;
  mutable std::map<std::string, bool> seen_;  // verifier name -> seen in some chain
  mutable std::vector<std::string> seen_order_;
};

// ---------------------------------------------------------------------------------------
// Summaries

struct PassCount {
  int64_t applicable = 0, passed = 0;
  double rate() const { return applicable ? static_cast<double>(passed) / static_cast<double>(applicable) : 0.0; }
};

struct StepStats {
  int64_t chains = 0, truncated = 0;
  double reward_sum = 0;  // NaN rewards left out
  int64_t reward_n = 0;
  double length_sum = 0;
  int64_t length_n = 0;
  std::map<std::string, PassCount> pass;  // verifier name (and kCombined) -> counts
};

// Tool use over the chains read: how many calls, how they ended, what they cost.
struct ToolStats {
  int64_t chains_with_calls = 0;
  int64_t calls = 0;
  std::map<std::string, int64_t> by_status;    // status -> calls
  std::map<int64_t, int64_t> calls_per_chain;  // number of calls -> chains (0 included)
  double wall_s_sum = 0, wall_s_max = 0;
  int64_t peak_memory_kb_max = 0;
  int64_t truncated = 0;                       // observations cut at the token limit
};

struct FailureReason {
  std::string reason;  // "code: runtime_error: exit code 1"
  int64_t count = 0;
  json example;        // {"step", "prompt_id", "group", "sample"} of the first chain with it
};

struct LengthStats {
  int64_t n = 0;
  double mean = 0;
  std::map<std::string, double> quantiles;  // "min", "p10", "p25", "p50", "p75", "p90", "p99", "max"
  std::vector<std::pair<double, int64_t>> histogram;  // (bin lower edge, count); bins of equal width
  double bin_width = 0;
};

struct RepeatedAnswer {
  std::string answer;                    // cut to 200 characters
  int64_t prompts = 0;                   // distinct prompts it was given to
  int64_t chains = 0, passed = 0;        // chains with it, and how many passed all verifiers
  std::vector<std::string> prompt_ids;   // a few of them
  int64_t distinct_golds = 0;            // distinct gold answers (math detail "gold") among them
};

struct PromptStep {
  int64_t chains = 0, passed = 0;  // passed = kCombined
  double reward_sum = 0, length_sum = 0;
  int64_t reward_n = 0, length_n = 0;
};

// Accumulates chains one at a time; memory grows with steps, verifiers, prompts × steps,
// distinct answers and one int per chain.
class Summary {
 public:
  explicit Summary(FlagOptions flag_options = {});
  void add(const ChainView& c, const json& chain);
  // add() with flags computed elsewhere (so that a caller that already has them does not pay twice).
  void add(const ChainView& c, const json& chain, const std::vector<Flag>& flags);

  int64_t chains() const { return chains_; }
  const std::map<int64_t, StepStats>& steps() const { return steps_; }
  const ToolStats& tools() const { return tools_; }
  std::vector<std::string> verifier_names() const;  // in first-seen order, then kCombined
  LengthStats lengths(int bins = 10) const;
  std::vector<FailureReason> failure_reasons(size_t top = 10) const;
  // Counts of each flag code, with a first example each.
  const std::map<std::string, std::pair<int64_t, json>>& flag_counts() const { return flag_counts_; }
  std::vector<RepeatedAnswer> repeated_answers(size_t top = 10) const;
  // Step -> stats of one prompt's chains; empty when the prompt was never seen.
  std::map<int64_t, PromptStep> prompt_history(const std::string& prompt_id) const;
  int64_t prompts() const { return static_cast<int64_t>(prompt_steps_.size()); }

  // Everything above as one JSON object (what `retort audit --summary --json` prints).
  json to_json(size_t top = 10, const std::string& history_prompt = "") const;
  // The same as aligned text tables.
  std::string to_text(size_t top = 10, const std::string& history_prompt = "") const;

 private:
  struct AnswerGroup {
    std::string answer;
    std::vector<std::string> prompt_ids;  // distinct, capped
    int64_t prompts = 0, chains = 0, passed = 0;
    std::vector<std::string> golds;       // distinct, capped
  };

  FlagOptions flag_options_;
  int64_t chains_ = 0;
  std::map<int64_t, StepStats> steps_;
  ToolStats tools_;
  std::vector<std::string> verifier_order_;
  std::vector<int32_t> lengths_;
  std::unordered_map<std::string, FailureReason> reasons_;
  std::map<std::string, std::pair<int64_t, json>> flag_counts_;
  std::unordered_map<uint64_t, AnswerGroup> answers_;  // hash of the trimmed answer -> group
  std::unordered_map<std::string, std::map<int64_t, PromptStep>> prompt_steps_;
};

// Why one chain failed, one reason per failed verifier ("math: wrong answer",
// "code: runtime_error: exit code 1", "code: no code found"). Values that differ per
// chain (numbers in outputs, model text) are left out so that reasons group.
std::vector<std::string> failure_reasons_of(const ChainView& c);

// A compact identity for a chain in examples: {"step", "prompt_id", "group", "sample"}.
json chain_ref(const ChainView& c);

// Cuts `s` to at most `max_bytes` bytes on a UTF-8 character boundary, adding "…" when cut.
std::string cut_utf8(const std::string& s, size_t max_bytes);

}  // namespace retort::audit
