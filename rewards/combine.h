// Reward composition: the configured verifiers score a batch of N completions into an N x K
// table, combined by a weighted sum that skips not-applicable (NaN) entries.
//
// Scheduling (DESIGN.md section 1): CPU verifiers (math, format, ...) run on a TBB task
// arena; verifiers that wait (code through the sandbox pool, external processes) run on a
// pool of waiting threads so they never hold an arena worker. Every cell has a deadline:
// a verifier that has not answered by then becomes reward 0 with a detail that says so,
// and the trainer goes on (the late answer is dropped).
#pragma once

#include <cstdint>  // defines: uint8_t
#include <memory>   // defines: std::shared_ptr, std::unique_ptr
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

#include "common/config.h"     // defines: retort::ConfigBinder
#include "rewards/verifier.h"  // defines: Verifier, Registry, Score
#include "sandbox/executor.h"  // defines: sandbox::ExecutorConfig

namespace retort::sandbox {
struct ExecutorConfig;
}

namespace retort::rewards {

// One entry of the config's verifier list: {"name": "math", "weight": 1.0, "args": {...}}.
struct VerifierSpec {
  std::string name;
  double weight = 1.0;
  json args = json::object();
  void bind(retort::ConfigBinder& b);
};

struct RewardsConfig {
  std::vector<VerifierSpec> verifiers;  // the K columns, in order
  std::vector<std::string> plugins;     // shared libraries exporting retort_register_verifiers, loaded first
  double deadline_s = 60;               // per batch: cells not answered by then score 0 ("timed out")
  int threads = 0;                      // CPU arena threads; 0 = all cores
  int wait_threads = 32;                // threads that wait on sandbox / external verifiers
  sandbox::ExecutorConfig sandbox;      // the pool code verifiers share (made on first use)
  void bind(retort::ConfigBinder& b);
};

// One completion to score. The row is shared: G completions of one prompt point at one row.
struct ScoreInput {
  std::string prompt;
  std::string completion;
  std::shared_ptr<const json> row;
  int64_t completion_tokens = -1;
};

// The N x K table. Row-major: cell (i, k) is at i * k_count + k.
struct RewardTable {
  int n = 0, k = 0;
  std::vector<std::string> names;  // [K]
  std::vector<double> weights;     // [K]
  std::vector<double> rewards;     // [N*K], NaN = not applicable
  std::vector<uint8_t> passed;     // [N*K]
  std::vector<json> details;       // [N*K]
  std::vector<double> total;       // [N] weighted sums (combine_rewards)

  double reward(int i, int j) const { return rewards[static_cast<size_t>(i) * k + j]; }
  const json& detail(int i, int j) const { return details[static_cast<size_t>(i) * k + j]; }
};

// total_i = sum over k with r_ik not NaN of w_k * r_ik; 0 when no verifier applies to i.
std::vector<double> combine_rewards(const RewardTable& table);

class RewardSet {
 public:
  // Loads the plugins, builds each verifier through `registry` (plus the plugins' names).
  // A bad name or bad args throws retort::Error naming the entry. `executor` is the sandbox
  // pool to share; when null, one is made from cfg.sandbox on first use by a code verifier.
  // An empty verifier list is an error unless `allow_empty` (GRPO's on-policy distillation
  // alone: the table then has K = 0 columns and every total is 0).
  RewardSet(const RewardsConfig& cfg, Registry registry, std::shared_ptr<sandbox::Executor> executor = nullptr,
            bool allow_empty = false);
  ~RewardSet();  // waits for in-flight CPU tasks (bounded: they are bounded by design)
  RewardSet(const RewardSet&) = delete;
  RewardSet& operator=(const RewardSet&) = delete;

  // Scores every input with every verifier; returns when all cells answered or the deadline
  // passed. Thread-safe.
  RewardTable score(const std::vector<ScoreInput>& inputs) const;

  const std::vector<std::string>& names() const { return names_; }
  const std::vector<double>& weights() const { return weights_; }
  // The sandbox pool the code verifiers share (made from cfg.sandbox now if none exists yet),
  // for other users of the same pool (the rollout engine's tool calls). Thread-safe.
  std::shared_ptr<sandbox::Executor> executor() const;

  class Impl;

 private:
  std::vector<std::string> names_;
  std::vector<double> weights_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace retort::rewards
