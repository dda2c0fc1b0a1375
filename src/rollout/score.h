// Sampling with overlapped verification: G completions for each of B prompts, each one handed
// to the verifiers the moment the sampler reports it finished, so that scoring (math on the
// TBB arena, code in the sandbox pool) runs while other rows still decode (DESIGN.md section 1).
// The one scored-rollout path of GRPO, `retort eval`, `retort generate` and the demo: the
// rollout engine (rollout/engine.h) samples, each finished sequence goes to the verifiers at
// once, and the call returns when every row is scored or the deadline (rewards.deadline_s
// after the last completion finished) has passed.
//
// Shapes: B prompts, G completions per prompt, N = B*G rows (row g*G + j is completion j of
// prompt g), K verifiers, P prompt length, L completion length.
#pragma once

#include <cstdint>  // defines: int64_t, int32_t
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

#include "audit/chain_log.h"    // defines: ChainEntry
#include "data/prompts.h"       // defines: PromptRecord
#include "model/config.h"       // defines: ModelConfig
#include "rewards/combine.h"    // defines: rewards::RewardSet, RewardTable
#include "rollout/sampler.h"    // defines: Rollout, SamplerOptions
#include "tokenizer/chat_template.h"  // defines: ChatTemplate
#include "tokenizer/tokenizer.h"      // defines: Tokenizer

namespace retort {

struct ScoredRollout {
  Rollout rollout;                 // tokens [N, P+L], logprobs [N, L], completions [N] (stop token included), truncated [N]
  std::vector<std::string> texts;  // [N] decoded completions, stop token excluded, special tokens kept
  rewards::RewardTable table;      // [N x K] with the weighted totals [N]
  double sample_s = 0;             // sampler wall time (verification runs inside it)
  double score_wait_s = 0;         // wait for the verifiers after the sampler returned: the part not hidden
  double verify_busy_s = 0;        // time the verifiers worked, overlapped or not
};

// Samples opts.group_size completions for each prompt and scores every completion with
// `rewards` as soon as it finishes. prompt_ids[g] are the ids of records[g]->text; the
// record's rendered text is the verifiers' prompt and its row their dataset record.
// opts.on_finished is replaced (the scorer needs it).
ScoredRollout sample_and_score(Qwen2ForCausalLMImpl& model, const std::vector<std::vector<int32_t>>& prompt_ids,
                               const std::vector<const PromptRecord*>& records, SamplerOptions opts,
                               const rewards::RewardSet& rewards, const Tokenizer& tok);

// The chains.jsonl entry (audit/chain_log.h) of row `row` of a scored rollout of `rec`: prompt,
// text and its think/answer split, every verifier's cell, total reward, sample index, length,
// truncated. The one place that builds it (GRPO and eval); the caller adds step, group,
// advantage and KL.
ChainEntry chain_entry(const PromptRecord& rec, const ScoredRollout& s, int64_t row);

// The sampler's stop ids: the model's EOS ids plus the tokens that end an assistant turn in
// `tmpl` (when the tokenizer has them as single tokens).
std::vector<int64_t> sampler_stop_ids(const ModelConfig& mc, const Tokenizer& tok, const ChatTemplate& tmpl);

}  // namespace retort
