// Evaluation: `retort eval CONFIG` — pass@1, pass@k and maj@k of a checkpoint on prompt files.
//
// Top-down (run_eval in eval.cpp):
//   1 setup     config (typos name the key), tokenizer, model in eval mode, stop ids
//   2 per dataset: load the prompts (data/prompts.h formats: math with a gold answer, GSM8K's
//               "#### N", stdin/stdout tests, HumanEval, MBPP), resolve its verifiers (default:
//               math for answer rows, code for test rows), build its reward set
//   3 sample    `batch_size` prompts x k completions per sampler call; each completion is
//               verified as soon as it finishes (rollout/score.h), so scoring overlaps decoding
//   4 measure   per dataset, for every verifier and for "all" (a sample passes when every
//               verifier that applies to it passed): pass@1, pass@k' for k' in {1, 2, 4, ..., k},
//               maj@k', mean completion length, truncated share, per-prompt results
//   5 write     eval.json (atomically) and one line per sample in RUN_DIR/eval_samples.jsonl
//               (the audit tools read it); a summary table on stderr
// R1 evaluation settings (DeepSeek-AI 2025, section 3): temperature 0.6, top-p 0.95, k samples
// per prompt, pass@1 = mean over the k samples; these are the defaults here.
//
// Failure modes: a config typo names the key and the allowed ones; a dataset verifier name that
// is neither in rewards.verifiers nor a known verifier names the entry and the known names; a
// bad prompt line names FILE:LINE; two datasets with one name are refused; a verifier that does
// not answer by the deadline scores 0 (the detail says so) and the evaluation goes on.
// Data parallel (`retort launch -n N -- eval`, and `retort run` under launch): each rank samples
// a contiguous share of every dataset's prompts; rank 0 gathers the outcomes and appends the
// other ranks' sample files to its own, so the samples come in prompt order. Each sample has
// its own random stream, so the files equal one process's (up to float rounding between
// thread counts).
// What it deliberately is not: a training stage (no gradients, no checkpoints).
//
// Shapes: B prompts per sampler call, k completions per prompt, N = B*k rows.
#pragma once

#include <cstdint>   // defines: int64_t
#include <map>       // defines: std::map
#include <optional>  // defines: std::optional
#include <string>    // defines: std::string
#include <vector>    // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "common/runtime.h"    // defines: RuntimeConfig
#include "data/prompts.h"      // defines: PromptFormatOptions
#include "rewards/combine.h"   // defines: rewards::RewardsConfig
#include "rewards/verifier.h"  // defines: rewards::Registry
#include "rollout/tools.h"     // defines: ToolOptions

namespace retort {

class ConfigBinder;

struct EvalDatasetConfig {
  std::string name;                    // key in eval.json; "" = the file name without .jsonl
  std::string path;                    // prompts JSONL (data/prompts.h formats)
  PromptFormatOptions format;          // chat_template, system, math_instruction, code_instruction (beside the path;
                                       // missing ones come from the top-level "format")
  int64_t limit = 0;                   // the first `limit` prompts of the file; 0 = all
  std::vector<std::string> verifiers;  // names: entries of rewards.verifiers, or built-in verifiers with default args;
                                       // [] = math when the file has answer rows, code when it has test rows
  void bind(ConfigBinder& b);
};

struct EvalSamplingConfig {
  int64_t k = 4;                 // samples per prompt (n of the pass@k estimator); R1 used 4 to 64
  double temperature = 0.6;      // R1 evaluation setting
  double top_p = 0.95;           // R1 evaluation setting
  int64_t top_k = 0;             // 0 = all tokens
  int64_t max_new_tokens = 1024; // completion cap; longer ones count as truncated (R1: 32768)
  bool greedy = false;           // argmax decoding; k is then 1 (k greedy samples would be identical)
  double kv_cache_mb = 0;        // the rollout engine's KV cache budget (MiB); 0 = CPU 2048, CUDA half the free memory
  void bind(ConfigBinder& b);
};

struct EvalConfig {
  std::string run_dir = "runs/eval";
  std::string model;            // checkpoint folder (Hugging Face layout)
  std::string tokenizer;        // tokenizer.json; "" = <model>/tokenizer.json
  std::string dtype = "auto";   // auto (float32 on CPU, bfloat16 on CUDA) | float32 | bfloat16 | float16
  std::string output;           // eval.json path; "" = <run_dir>/eval.json
  RuntimeConfig runtime;        // threads, seed (the sampler's streams derive from it), device
  PromptFormatOptions format;   // defaults for every dataset's chat_template, system and instructions
  std::vector<EvalDatasetConfig> datasets;
  EvalSamplingConfig sampling;
  ToolOptions tools;               // tool calls inside the chains (rollout/tools.h, docs/tools.md); off by default
  rewards::RewardsConfig rewards;  // verifiers: the specs (args, weights) datasets name; deadline, threads, sandbox
  int64_t batch_size = 8;          // prompts per sampler call (B); rows per call = B * k
  int64_t max_prompt_tokens = 0;   // longer prompts are skipped and counted; 0 = no limit
  void bind(ConfigBinder& b);
};

// What a test or a caller can add that a config file cannot say.
struct EvalHooks {
  std::optional<rewards::Registry> registry;  // verifiers to resolve names in; unset = the built-ins
};

// Metrics of one dataset under one verifier ("all" = every applicable verifier passed).
struct EvalMetrics {
  std::string verifier;
  int64_t prompts = 0;               // prompts with at least one sample the verifier applies to
  int64_t samples = 0;               // samples it applies to
  double pass1 = 0;                  // mean over prompts of c_i / n_i
  std::map<int64_t, double> pass_at; // k' -> mean over prompts of pass_at_k(n_i, c_i, k')
  std::map<int64_t, double> maj_at;  // k' -> share of prompts whose majority answer over the first k' samples passed
};

struct EvalDatasetResult {
  std::string name;
  int64_t prompts = 0;        // evaluated
  int64_t skipped = 0;        // longer than max_prompt_tokens
  int64_t k = 0;              // samples per prompt
  std::vector<std::string> verifiers;
  std::vector<EvalMetrics> metrics;  // "all" first, then one per verifier in order
  double mean_length = 0;     // completion tokens (stop token included)
  double truncated_share = 0; // share of samples ended by max_new_tokens
  double mean_reward = 0;     // weighted total over the dataset's verifiers
  double time_s = 0;
  const EvalMetrics& all() const { return metrics.front(); }
};

struct EvalResult {
  std::vector<EvalDatasetResult> datasets;
  std::string output;         // the eval.json written
  std::string samples_path;   // eval_samples.jsonl
  nlohmann::json report;      // what eval.json holds
};

// Runs the evaluation as configured. `overrides` are "a.b=c" strings applied to `doc` before parsing.
EvalResult run_eval(const nlohmann::json& doc, const std::string& where, const std::vector<std::string>& overrides = {},
                    const EvalHooks& hooks = {});

// ---- the estimators (exposed for tests) -------------------------------------------------

// Unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1
// and its numerically stable form in figure 3), for n samples of which c passed:
//   pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k / i)
// which is 1 when n - c < k. Requires 0 <= c <= n and 1 <= k <= n.
double pass_at_k(int64_t n, int64_t c, int64_t k);

// The k' at which pass@k' and maj@k' are reported: 1, 2, 4, ... up to n, plus n itself.
std::vector<int64_t> k_values(int64_t n);

struct MajorityVote {
  int64_t winner = -1;   // index of the first sample carrying the winning answer; -1 = no sample had an answer
  std::string answer;    // the winning answer
  int64_t votes = 0;     // how many samples gave it
  bool passed = false;   // the grade of the winning answer (that of its first sample)
};

// Majority vote over `answers` (empty = the sample gave no answer and does not vote); ties go
// to the answer seen first; the voted answer is graded by `passed` of its first occurrence.
MajorityVote majority_vote(const std::vector<std::string>& answers, const std::vector<bool>& passed);

}  // namespace retort
