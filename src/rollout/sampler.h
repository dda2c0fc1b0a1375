// Sampling: G completions for each of B prompts, with per-token log-probabilities of the
// sampled tokens. `sample` runs the rollout engine (rollout/engine.h: a block KV cache sized
// by a memory budget, the prompt's KV stored once per group, continuous batching with
// preemption); `sample_static` is the previous batched sampler, kept as the benchmark's
// baseline (tests/bench/bench_rollout): it left-pads the B prompts, prefills them once,
// copies each prompt's dense cache rows G times ([N, Hkv, P + max_new_tokens, D] per layer),
// and decodes the shrinking batch until the longest row ends.
//
// Shapes: B prompts, G group size, N = B*G rows (row b*G + g is completion g of prompt b),
// P prompt length (longest prompt), L completion length (the longest completion produced,
// at most max_new_tokens), V vocab.
#pragma once

#include <cstdint>     // defines: int64_t, uint64_t
#include <functional>  // defines: std::function
#include <string>      // defines: std::string
#include <vector>      // defines: std::vector

#include "common/torch_pch.h"    // defines: torch::Tensor
#include "model/transformer.h"  // defines: Qwen2ForCausalLMImpl
#include "rewards/tool_calls.h"  // defines: rewards::ToolCallRecord
#include "rollout/tools.h"       // defines: ToolOptions, EncodeFn
#include "sandbox/executor.h"    // defines: sandbox::Executor

namespace retort {

struct Rollout {
  torch::Tensor tokens;           // [B*G, P+L] int64: left-padded prompt, completion, pad_token_id after it
  torch::Tensor attention_mask;   // [B*G, P+L] int64: 1 on prompt and completion tokens
  torch::Tensor completion_mask;  // [B*G, L] int64: 1 on sampled (model-written) tokens, up to and including the stop
                                  // token; 0 on padding and on tool observations
  torch::Tensor observation_mask; // [B*G, L] int64: 1 on tokens a tool call appended (observations); zeros without tools
  torch::Tensor logprobs;         // [B*G, L] float32: log p of each sampled token under the sampling temperature
                                  // (logits / temperature; 1 when greedy), without top-k/top-p: what token_logprobs
                                  // recomputes with the same temperature; 0 where completion_mask is 0
  std::vector<std::string> texts; // B*G decoded completions (stop token excluded); empty without a decoder
  std::vector<std::vector<int32_t>> completions;  // B*G completion ids (stop token included)
  std::vector<bool> truncated;    // B*G: ended by max_new_tokens, not by a stop token (nor by the tool budget)
  std::vector<std::vector<rewards::ToolCallRecord>> tool_calls;  // B*G: each row's tool calls, in order (empty without tools);
                                  // a last record with status "budget" ended the row
  int64_t prompt_length = 0;      // P
  int64_t group_size = 1;         // G: rows g*G .. g*G+G-1 belong to prompt g
};

struct SamplerOptions {
  int64_t group_size = 1;              // G completions per prompt
  int64_t max_new_tokens = 256;        // upper bound on L
  bool greedy = false;                 // argmax (also when temperature <= 0)
  double temperature = 1.0;            // logits / temperature before top-k/top-p
  int64_t top_k = 0;                   // keep the k most likely tokens; 0 = all
  double top_p = 1.0;                  // keep the smallest set of tokens whose probability reaches top_p
  std::vector<int64_t> stop_token_ids; // EOS, <|im_end|>, <｜end▁of▁sentence｜>, ...
  int64_t pad_token_id = 0;            // fills padding in Rollout::tokens (masked out everywhere)
  uint64_t seed = 0;                   // the same seed, prompts and options give the same rollout
  // One CPU generator per row (B*G seeds, row b*G + g) instead of one for the batch: a row's
  // tokens then depend on its own seed only, not on which other rows share the batch, so
  // that data parallel ranks sampling disjoint prompts reproduce a single process. Costs a
  // host copy of the logits per step. Empty = `seed` for the whole batch.
  std::vector<uint64_t> row_seeds;
  // Called (on the calling thread) as soon as a row finishes, with its row index and ids,
  // so that verification can start while other rows still decode. Optional.
  std::function<void(int64_t row, const std::vector<int32_t>& completion)> on_finished;

  // ---- the engine's memory and batching (sample_static ignores them)
  double kv_cache_mb = 0;           // KV cache budget in MiB (fractions allowed); 0 = the default (CPU: 2048; CUDA: half the free memory)
  int64_t block_size = 16;          // positions per KV cache block
  int64_t max_num_seqs = 256;       // sequences decoded together at most
  int64_t max_prefill_tokens = 1024;  // positions per prefill step: longer prompts are prefilled in chunks
  // Benchmarks only: row i stops after forced_lengths[i] tokens as if it had drawn a stop token
  // (so that two samplers do the same work). Empty = off.
  std::vector<int64_t> forced_lengths;
  // Tests and benchmarks only: row i's first forced_tokens[i].size() sampled ids are these
  // instead of the drawn ones (the draw still happens, so the row's random stream is the one it
  // would have; log-probs are those of the forced ids). Observations are not counted. Used to
  // make a random model write tool calls. Empty = off; else one list per row (B*G).
  std::vector<std::vector<int32_t>> forced_tokens;

  // ---- tool calls (rollout/tools.h; `sample` only): a sequence that closes a call pauses, the
  // call runs in `executor` while others decode, and its observation (encoded by `encode`) is
  // appended before it resumes. Needs the DecodeFn of `sample` (the completion's text is tested
  // for a closed call). max_new_tokens bounds the whole completion, observations included.
  ToolOptions tools;
  sandbox::Executor* executor = nullptr;  // not owned; must outlive the call
  EncodeFn encode;                        // observation text -> ids
};

// What the engine did (for benchmarks and logs).
struct EngineStats {
  int64_t num_blocks = 0, block_size = 0;  // the pool (its size after the budget and the work's worst case)
  int64_t bytes_per_block = 0;             // K and V of every layer
  int64_t peak_blocks = 0;                 // most blocks in use at once
  int64_t prefill_steps = 0, decode_steps = 0;
  int64_t idle_slot_steps = 0;             // decode steps with fewer rows than min(max_num_seqs, N)
  int64_t preemptions = 0;
  int64_t tool_calls = 0;                  // calls run in the sandbox (budget answers not counted)
  int64_t decode_steps_with_paused = 0;    // decode steps taken while some sequence waited on a tool call
  double tool_wait_s = 0;                  // time the loop waited with nothing to run but tool calls
  int64_t peak_kv_bytes() const { return peak_blocks * bytes_per_block; }
};

using DecodeFn = std::function<std::string(const std::vector<int32_t>& ids)>;

// Samples G completions for each prompt (ids, no padding, each non-empty) with the rollout
// engine (rollout/engine.cpp). Runs under torch::NoGradGuard. `decode`, when given, fills
// Rollout::texts (and is required with opts.tools.enabled); `stats`, when given, receives
// what the engine did.
Rollout sample(Qwen2ForCausalLMImpl& model, const std::vector<std::vector<int32_t>>& prompts,
               const SamplerOptions& opts, const DecodeFn& decode = {}, EngineStats* stats = nullptr);

// The previous static sampler (the benchmark's baseline; see the top of this file). With
// `stats`, reports its decode steps and the steps with idle rows (fewer active than N).
Rollout sample_static(Qwen2ForCausalLMImpl& model, const std::vector<std::vector<int32_t>>& prompts,
                      const SamplerOptions& opts, const DecodeFn& decode = {}, EngineStats* stats = nullptr);

// Picks one token per row of logits [A, V] according to opts (greedy / temperature / top-k /
// top-p) -> [A] int64, with torch's multinomial (one exponential draw per vocabulary entry).
// The static sampler's token choice; exposed for tests.
torch::Tensor pick_tokens(const torch::Tensor& logits, const SamplerOptions& opts, at::Generator& gen);

// The engine's token choice: one token per row of CPU logits [R, V], row r drawn with
// *gens[r] (CPU generators), from the same distribution as pick_tokens (greedy / temperature /
// top-k / top-p) -> [R] int64. Batched over rows, with one uniform per row (inverse transform
// over the row's float64 cumulative distribution) instead of V exponentials: at a 32k-152k
// vocabulary that is the sampler's dominant cost, and at the demo's 768 the per-row calls are.
// A row's token depends only on its logits and its generator, never on the other rows.
torch::Tensor draw_tokens(const torch::Tensor& logits, const SamplerOptions& opts, const std::vector<at::Generator*>& gens);

}  // namespace retort
