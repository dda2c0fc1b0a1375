// GRPO with verifiers, the sandbox and a KL anchor: `retort grpo CONFIG`.
//
// One step, top-down (run_grpo in grpo.cpp):
//   1 sample    B prompts x G completions with the rollout engine (rollout/score.h, the one scored-rollout
//               path); every finished completion is handed to the verifiers at once
//   2 score     the N x K reward table (rewards/combine.h), combined with the configured weights
//   3 dynamic   (optional, DAPO) groups whose rewards are all equal are dropped and more
//     sampling  prompts are drawn until B groups are kept (bounded retries, logged)
//   4 advantage per group: GRPO (r - mean) / (std + eps), RLOO or REINFORCE++ baseline (train/grpo_loss.h)
//   5 anchor    log-probs of the teacher (default), of a frozen copy of the initial policy, or none
//   5b opd      (optional) on-policy distillation: the teacher's log-prob of each sampled token
//               minus the sampler's is a per-token advantage, added with a weight to the
//               verifier's (train/grpo_loss.h opd_token_advantages; with no verifier it is the
//               whole advantage). The anchor pass gives the teacher's log-probs when anchor = teacher.
//   6 old       log-probs of the old policy from a training forward pass (the first pass's own, detached,
//               when the batch takes one optimizer step; else a no-grad pass first); their mismatch
//               with the sampler's is logged and corrected as loss.rollout_correction says
//   7 update    mu passes over the batch in minibatches (one optimizer step each) with
//               gradient accumulation; the objective is train/grpo_loss.h, untouched here
//   8 log       metrics.jsonl (one line per step) and chains.jsonl (one line per chain, audit/chain_log.h)
//   9 save      atomic checkpoints; a killed run resumes from the newest and reproduces the
//               uninterrupted run's metrics on CPU with a fixed seed
// Pass-rate curriculum (optional; open-r1's pass-rate filtering, done online): a prompt whose
// pass rate over its last `window` samplings is <= low or >= high (all failed / all passed)
// teaches nothing to a group-relative advantage; it is skipped for the next
// `set_aside_epochs` epochs of the prompt order, then returns. A completion passes when every
// applicable verifier passed it (as eval's "all"). The state is in the checkpoint.
// Tool observations (rollouts with tools): the tokens a tool's output appended to a chain are
// context, never trained on: the loss, the KL, the entropy, the rollout correction, the OPD
// advantages and every token count are taken over model-written tokens (Rollout::
// completion_mask); metrics log written_length_mean and obs_tokens_mean (docs/tools.md).
// Overlong completions: "mask" leaves truncated completions out of the loss (DAPO overlong
// filtering); "penalty" requires the `overlong` verifier in the rewards (DAPO soft overlong
// punishment); "none" treats them like any other completion.
//
// Failure modes: a config typo names the key and the allowed ones; a bad prompt line names
// FILE:LINE; no verifier, no usable prompt, a batch that does not split into minibatches, or an
// anchor without a checkpoint are errors before the first step (no verifier is allowed when
// opd.weight > 0: on-policy distillation alone); a verifier that does not
// answer by the deadline scores 0 (the detail says so) and the run goes on.
// Data parallel (src/dist, RANK/WORLD_SIZE set): every rank draws the same prompts and takes
// a contiguous slice of each round's groups (a group stays on one rank, so its advantages are
// unchanged); the losses are scaled by the combined batch's counts and the gradients summed,
// so N ranks take the step one process takes on the whole batch (each completion has its own
// random stream, keyed by its place in the round). Dynamic sampling refills to B groups over all ranks.
// minibatch_size must be 0 there (one optimizer step per pass over the whole batch).
// Only rank 0 writes metrics.jsonl, chains.jsonl and checkpoints.
// What it deliberately is not: tuned for GPUs.
//
// Shapes: B prompts per step, G completions per prompt, N = B*G sequences, P prompt length
// (longest in the batch), L completion length (longest in the batch), V vocab.
#pragma once

#include <functional>  // defines: std::function
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
#include "train/grpo_loss.h"    // defines: GrpoLossOptions
#include "train/micro_batch.h"  // defines: MicroBatchConfig
#include "train/optim.h"       // defines: OptimConfig

namespace retort {

class ConfigBinder;

struct GrpoDataConfig {
  std::string prompts;             // prompts JSONL (data/prompts.h formats)
  PromptFormatOptions format;      // chat_template, system, math_instruction, code_instruction
  int64_t max_prompt_tokens = 1024;  // longer prompts are skipped (counted in the log)
  void bind(ConfigBinder& b);
};

struct GrpoSamplingConfig {
  double temperature = 1.0;      // 1.0: the sampling log-probs are the policy's own
  double top_p = 1.0;
  int64_t top_k = 0;             // 0 = all tokens
  int64_t max_new_tokens = 512;  // completion length cap; longer ones are "truncated"
  // Kept for existing configs: the rollout engine always gives each completion a random
  // stream of its own, from (seed, step, round, prompt's place in the round, sample), so a
  // completion does not depend on the rest of its batch, on the KV budget or on the rank.
  bool seed_per_row = false;
  double kv_cache_mb = 0;        // the rollout engine's KV cache budget (MiB); 0 = CPU 2048, CUDA half the free memory
  void bind(ConfigBinder& b);
};

struct AdvantageConfig {
  std::string estimator = "grpo";  // grpo | rloo (leave-one-out mean) | reinforce_pp_baseline (train/grpo_loss.h)
  std::string scale = "group";  // grpo only: group (GRPO) | batch | none (Dr. GRPO: no division by a std)
  double eps = 1e-4;            // added to the std
  void bind(ConfigBinder& b);
};

struct DynamicSamplingConfig {
  bool enabled = false;  // DAPO: drop groups whose rewards are all equal (their advantage is 0) and refill
  int max_retries = 3;   // extra sampling rounds per step; a batch still short then trains on fewer groups
  void bind(ConfigBinder& b);
};

// On-policy distillation as a dense reward (see 5b above and docs/objectives.md).
struct OpdConfig {
  double weight = 0.0;  // w in A_it = A_i + w (log pi_teacher - log pi_sampler); 0 = off
  void bind(ConfigBinder& b);
  bool enabled() const { return weight > 0; }
};

// The pass-rate curriculum (see the top of this file and docs/objectives.md).
struct CurriculumConfig {
  bool enabled = false;
  int window = 2;               // recent samplings of a prompt whose pass rates are averaged
  double low = 0.0;             // set aside when the recent pass rate <= low (0: never solved)
  double high = 1.0;            // or >= high (1: always solved)
  int set_aside_epochs = 1;     // epochs of the prompt order it is skipped for
  void bind(ConfigBinder& b);
};

struct GrpoConfig {
  std::string run_dir = "runs/grpo";
  std::string model;             // initial policy checkpoint folder (Hugging Face layout)
  nlohmann::json model_config;   // or a config.json object to start from random weights (tests)
  std::string tokenizer;         // tokenizer.json; "" = <model>/tokenizer.json
  std::string output;            // final model folder; "" = <run_dir>/final
  std::string anchor = "teacher";  // teacher | reference (frozen initial policy) | none
  std::string teacher;           // teacher checkpoint folder (anchor = teacher, or opd.weight > 0)
  RuntimeConfig runtime;
  GrpoDataConfig data;
  int64_t prompts_per_step = 8;  // B
  int64_t group_size = 8;        // G
  GrpoSamplingConfig sampling;
  ToolOptions tools;             // tool calls inside the chains (rollout/tools.h, docs/tools.md); off by default
  rewards::RewardsConfig rewards;
  AdvantageConfig advantage;
  DynamicSamplingConfig dynamic_sampling;
  int mu = 1;                    // passes over each batch (PPO epochs); > 1 (or several minibatches) adds a no-grad forward for the old log-probs
  int64_t minibatch_size = 0;    // sequences per optimizer step; 0 = the whole batch (N)
  int grad_accum = 1;            // micro-batches per minibatch (bounds activation memory; unused with train.micro_batch_tokens)
  MicroBatchConfig train;        // the update's micro-batches by a token budget, packing, activation checkpointing
  int64_t logprob_micro_batch = 0;  // rows per no-grad forward (anchor / old log-probs); 0 = all
  GrpoLossOptions loss;
  OpdConfig opd;
  CurriculumConfig curriculum;
  std::string overlong = "none";  // none | mask | penalty (see the top of this file)
  OptimConfig optim = default_optim();
  int64_t steps = 100;           // GRPO steps (one batch of B*G completions each)
  int64_t log_every = 1;
  int64_t save_every = 50;       // 0 = only at the end
  int keep_last = 2;
  bool resume = true;
  void bind(ConfigBinder& b);

  // RL fine-tuning moves a trained model a little: a constant, small learning rate.
  static OptimConfig default_optim() {
    OptimConfig o;
    o.lr = 1e-6;
    o.warmup_steps = 0;
    o.min_lr_ratio = 1.0;
    o.beta2 = 0.99;
    return o;
  }
};

struct ScoredRollout;

// What a test or a caller can add that a config file cannot say.
struct GrpoHooks {
  std::optional<rewards::Registry> registry;  // verifiers to resolve names in; unset = the built-ins
  // Called with each sampling round's scored rollout (rollout/score.h) after the verifiers and
  // before its chains are built: to inspect it, or (tests) to edit it as an engine feature
  // would, e.g. mark completion tokens as tool observations in Rollout::completion_mask.
  std::function<void(ScoredRollout&)> on_rollout;
};

struct GrpoStepMetrics {
  int64_t step = 0;
  double reward_mean = 0;     // over the kept batch
  double reward_std = 0;
  double loss = 0;
  double kl = 0;              // mean per-token KL to the anchor under the sampling policy (NaN without anchor)
  int64_t groups_dropped = 0; // by dynamic sampling
  int64_t chains = 0;         // completions trained on
};

struct GrpoResult {
  std::vector<GrpoStepMetrics> steps;  // the steps run in this process
  std::string output_dir;
  int64_t resumed_from = 0;            // step of the checkpoint resumed from (0 = fresh)
};

// Runs GRPO as configured. `overrides` are "a.b=c" strings applied to `doc` before parsing.
GrpoResult run_grpo(const nlohmann::json& doc, const std::string& where, const std::vector<std::string>& overrides = {},
                    const GrpoHooks& hooks = {});

}  // namespace retort
