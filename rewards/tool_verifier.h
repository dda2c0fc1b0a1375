// The "tool" verifier: grades how a tool-integrated chain used its code interpreter, from the
// chain's text alone (rewards/tool_calls.h reads every call and the status its observation
// reports). It does not judge the answer: pair it with "math" or "code".
//
// Each call of the completion is counted by the status its observation carries:
//   ok                                          n_ok        earns reward_per_call (the first max_rewarded_calls)
//   runtime_error | memory_limit | output_limit n_failed    costs penalty_failed each (the program's fault)
//   time_limit                                  n_timeout   costs penalty_timeout each
//   budget (not run: calls or tool time spent)  n_budget    costs penalty_budget each
//   sandbox_error                               counted, neither rewarded nor penalised (not the policy's fault)
//   no observation (the chain ended on the call) counted as unanswered, neither rewarded nor penalised
//
//   reward = max(min_reward, reward_per_call * min(n_ok, cap) + penalty_failed * n_failed
//                            + penalty_timeout * n_timeout + penalty_budget * n_budget)
//   cap = max_rewarded_calls (0 = no cap). Penalties are <= 0, added as they are.
//
// This is ReTool's (Feng et al. 2025) and ToRL's shaping in one place: an optional small bonus
// for code that runs, a penalty for code that crashes, hangs or exceeds the budget. passed is
// true when no call failed, timed out or was refused (sandbox errors and unanswered calls do
// not fail a chain).
//
// A chain without calls is not applicable (NaN, the default: the weighted sum skips it and the
// pass rate counts tool-using chains only) or, with no_calls = "zero", scores 0 and passes.
#pragma once

#include <cstdint>  // defines: int64_t
#include <memory>   // defines: std::shared_ptr
#include <string>   // defines: std::string

#include "common/config.h"    // defines: retort::ConfigBinder
#include "rewards/verifier.h"  // defines: Verifier, Score

namespace retort::rewards {

struct ToolVerifierOptions {
  std::string format = "python";   // python (```python blocks, ```output answers) | qwen (<tool_call> JSON)
  double reward_per_call = 0.0;    // bonus per call that ended ok; >= 0 (ReTool trains with 0: correctness only)
  int64_t max_rewarded_calls = 0;  // ok calls that earn the bonus at most; 0 = no cap (the engine's call budget bounds it)
  double penalty_failed = -0.1;    // per runtime_error / memory_limit / output_limit call; <= 0
  double penalty_timeout = -0.1;   // per time_limit call; <= 0
  double penalty_budget = -0.1;    // per call refused for the budget (calls per chain or tool time spent); <= 0
  double min_reward = -1.0;        // floor of the reward: many failures cannot outweigh the answer's reward; <= 0
  std::string no_calls = "not_applicable";  // a chain without calls: not_applicable (NaN) | zero (reward 0, passed)
  void bind(retort::ConfigBinder& b);
};

// Throws retort::Error for an unknown format.
std::shared_ptr<Verifier> make_tool_verifier(const ToolVerifierOptions& opt);

}  // namespace retort::rewards
