// A Sequence of the rollout engine: one completion being sampled. It owns its tokens (the
// prompt, then what it has generated), its per-token log-probabilities and its block table
// (the KV cache blocks that hold its keys and values, in position order). Torch-free: the
// engine keeps each sequence's random generator beside it (rollout/engine.cpp).
//
// Life: Waiting (queued, or preempted: its blocks were freed and its KV will be recomputed)
// -> Running (its KV up to num_cached is in the cache; it decodes one token per step) ->
// Finished (a stop token or max_new_tokens; its blocks are freed at once). With tools, a
// Running sequence that closes a tool call is Paused while the sandbox runs it: it leaves the
// batch but keeps its blocks (unless the cache needs them: then it recomputes on resume); the
// observation is appended to its completion and it is Waiting again, as a unit that computes
// positions [num_cached, length) and samples its next token from the last one.
#pragma once

#include <cstdint>  // defines: int64_t, int32_t
#include <vector>   // defines: std::vector

#include "rewards/tool_calls.h"  // defines: rewards::ToolCallRecord

namespace retort {

enum class SequenceStatus { Waiting, Running, Paused, Finished };

struct Sequence {
  int64_t id = 0;             // row of the rollout: prompt_index * G + sample_index
  int64_t prompt_index = 0;   // which prompt of the work
  int64_t sample_index = 0;   // which of its G completions
  const std::vector<int32_t>* prompt = nullptr;  // [P] the prompt's ids (owned by the caller)
  std::vector<int32_t> completion;               // [n] generated ids, the stop token included
  std::vector<float> logprobs;                   // [n] log p of each generated id at the sampling temperature
  std::vector<int64_t> block_table;              // block ids; position t lives in block_table[t / block_size]
  int64_t num_cached = 0;     // tokens (prompt first) whose keys/values are in the cache
  int64_t preemptions = 0;    // times its blocks were taken back
  SequenceStatus status = SequenceStatus::Waiting;
  bool stopped = false;       // ended by a stop token (else by max_new_tokens or the tool budget)
  // ---- tool calls (rollout/tools.h)
  std::vector<uint8_t> observation;  // [n] 1 where the completion's id was appended by a tool call, not sampled
  int64_t sampled = 0;               // ids of the completion that were sampled (n minus the observations)
  std::vector<rewards::ToolCallRecord> tool_calls;  // each call, in order
  double tool_time_s = 0;            // sandbox wall time of its calls so far
  bool tool_budget_stop = false;     // ended after a call beyond max_calls / max_tool_time_s (not truncated)

  int64_t prompt_length() const { return static_cast<int64_t>(prompt->size()); }
  int64_t length() const { return prompt_length() + static_cast<int64_t>(completion.size()); }
  // Token at position t of prompt + completion.
  int32_t token(int64_t t) const {
    const int64_t P = prompt_length();
    return t < P ? (*prompt)[static_cast<size_t>(t)] : completion[static_cast<size_t>(t - P)];
  }
};

}  // namespace retort
