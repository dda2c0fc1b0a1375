// The "tool" verifier (see tool_verifier.h).
#include "rewards/tool_verifier.h"

#include <algorithm>  // defines: std::max, std::min

#include "rewards/tool_calls.h"  // defines: find_tool_calls, tool_format_from_name

namespace retort::rewards {

void ToolVerifierOptions::bind(retort::ConfigBinder& b) {
  b.choice("format", format, {"python", "qwen"});
  b.field("reward_per_call", reward_per_call, retort::Range::at_least(0));
  b.field("max_rewarded_calls", max_rewarded_calls, retort::Range::at_least(0));
  b.field("penalty_failed", penalty_failed, retort::Range().up_to(0));
  b.field("penalty_timeout", penalty_timeout, retort::Range().up_to(0));
  b.field("penalty_budget", penalty_budget, retort::Range().up_to(0));
  b.field("min_reward", min_reward, retort::Range().up_to(0));
  b.choice("no_calls", no_calls, {"not_applicable", "zero"});
}

namespace {

// How a call's status counts (tool_verifier.h's table).
enum class Outcome { Ok, Failed, Timeout, Budget, SandboxError, Unanswered };

Outcome outcome_of(const ToolCallSpan& call) {
  if (!call.answered) return Outcome::Unanswered;
  const std::string& s = call.status;
  if (s == "ok") return Outcome::Ok;
  if (s == "time_limit") return Outcome::Timeout;
  if (s == "budget") return Outcome::Budget;
  if (s == "sandbox_error") return Outcome::SandboxError;
  return Outcome::Failed;  // runtime_error, memory_limit, output_limit, and any status this build does not know
}

// The end of a text (an observation's last lines carry the error and the status line).
std::string tail_for_detail(const std::string& s, size_t max_chars = 300) {
  if (s.size() <= max_chars) return s;
  size_t from = s.size() - max_chars;
  while (from < s.size() && (static_cast<unsigned char>(s[from]) & 0xC0) == 0x80) ++from;  // UTF-8 boundary
  return "[" + std::to_string(from) + " chars before]..." + s.substr(from);
}

class ToolVerifier : public Verifier {
 public:
  explicit ToolVerifier(const ToolVerifierOptions& o)
      : opt_(o), format_(tool_format_from_name(o.format, "rewards verifier 'tool': args.format")) {}

  Score verify(const Sample& s) const override {
    std::vector<ToolCallSpan> calls = find_tool_calls(s.completion, format_);
    if (calls.empty()) {
      if (opt_.no_calls == "not_applicable") {
        Score na = Score::not_applicable("the chain makes no tool call");
        na.detail["calls"] = 0;
        return na;
      }
      Score zero;
      zero.passed = true;
      zero.detail = {{"format", opt_.format}, {"calls", 0}};
      return zero;
    }

    int64_t n_ok = 0, n_failed = 0, n_timeout = 0, n_budget = 0, n_sandbox = 0, n_unanswered = 0, n_truncated = 0;
    json statuses = json::array();
    json first_failed_call;
    for (size_t i = 0; i < calls.size(); ++i) {
      const ToolCallSpan& c = calls[i];
      Outcome o = outcome_of(c);
      switch (o) {
        case Outcome::Ok: ++n_ok; break;
        case Outcome::Failed: ++n_failed; break;
        case Outcome::Timeout: ++n_timeout; break;
        case Outcome::Budget: ++n_budget; break;
        case Outcome::SandboxError: ++n_sandbox; break;
        case Outcome::Unanswered: ++n_unanswered; break;
      }
      n_truncated += c.truncated ? 1 : 0;
      statuses.push_back(c.answered ? c.status : "unanswered");
      bool counts_against = o == Outcome::Failed || o == Outcome::Timeout || o == Outcome::Budget;
      if (counts_against && first_failed_call.is_null())
        first_failed_call = {{"call", i + 1}, {"status", c.status}, {"code", truncate_for_detail(c.code, 300)},
                         {"observation", tail_for_detail(c.body)}};
    }

    int64_t rewarded = opt_.max_rewarded_calls > 0 ? std::min(n_ok, opt_.max_rewarded_calls) : n_ok;
    double bonus = opt_.reward_per_call * static_cast<double>(rewarded);
    double penalty = opt_.penalty_failed * static_cast<double>(n_failed) +
                     opt_.penalty_timeout * static_cast<double>(n_timeout) +
                     opt_.penalty_budget * static_cast<double>(n_budget);
    Score out;
    out.reward = std::max(opt_.min_reward, bonus + penalty);
    out.passed = first_failed_call.is_null();
    json& d = out.detail;
    d["format"] = opt_.format;
    d["calls"] = calls.size();
    d["ok"] = n_ok;
    d["failed"] = n_failed;
    d["timed_out"] = n_timeout;
    d["over_budget"] = n_budget;
    d["sandbox_error"] = n_sandbox;
    d["unanswered"] = n_unanswered;
    d["truncated_observations"] = n_truncated;
    d["rewarded_calls"] = rewarded;
    d["bonus"] = bonus;
    d["penalty"] = penalty;
    d["statuses"] = std::move(statuses);
    if (!first_failed_call.is_null()) {
      // "error" groups failure reasons in the audit by its part before ": " ("tool: time_limit").
      d["error"] = first_failed_call["status"].get<std::string>() + ": call " +
                   std::to_string(first_failed_call["call"].get<size_t>()) + " of " + std::to_string(calls.size());
      d["first_failed_call"] = std::move(first_failed_call);
    }
    return out;
  }

 private:
  ToolVerifierOptions opt_;
  ToolFormat format_;
};

}  // namespace

std::shared_ptr<Verifier> make_tool_verifier(const ToolVerifierOptions& opt) { return std::make_shared<ToolVerifier>(opt); }

}  // namespace retort::rewards
