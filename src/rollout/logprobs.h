// token_logprobs — the one function for per-token log-probabilities: the policy's (with
// autograd), the old policy's and the reference/teacher's (under torch::NoGradGuard), and
// `retort score`.
#pragma once

#include <cstdint>  // defines: int64_t

#include "common/torch_pch.h"    // defines: torch::Tensor
#include "model/lm_head.h"      // defines: HeadChunkOptions
#include "model/transformer.h"  // defines: Qwen2ForCausalLMImpl

namespace retort {

struct LogprobOptions {
  int64_t micro_batch = 0;   // rows per forward pass (bounds the activations); 0 = all rows at once
  double temperature = 1.0;  // logits are divided by it before the softmax (1 = the model itself)
  int64_t first = 0;         // first scored position: the result covers positions first .. T-2 (the
                             // predictions of tokens first+1 .. T-1); GRPO passes P-1 to score completions only
  bool checkpoint_layers = false;     // recompute decoder layers in backward (ForwardOptions::checkpoint_layers)
  torch::Tensor sequence_ids;         // [N, T] int64: packed rows (ForwardOptions::sequence_ids); a position
                                      // whose next token starts another sequence is scored 0
  torch::Tensor* entropy = nullptr;   // when set: <- [N, T-1-first] entropy of softmax(logits / temperature)
  bool entropy_grad = false;          // the entropy keeps its gradient (an entropy bonus); else it is detached
  HeadChunkOptions head;              // the chunked LM head's chunk size
};

// log p(ids[n, t] | ids[n, <t]) for t = first+1..T-1:  lp = logit[t-1, ids[t]] - logsumexp(logit[t-1, :])
// ids [N, T] int64, attention_mask [N, T] (1 = token; prompts left-padded, completions
// right-padded; undefined = all tokens) -> [N, T-1-first] float32, 0 where the token or the one
// before it is padding. Differentiable when grad mode is on. The LM head runs in chunks over
// the real tokens only (model/lm_head.h): no [N, T, V] tensor exists, and the log-probs are
// float32 whatever the model's dtype.
torch::Tensor token_logprobs(Qwen2ForCausalLMImpl& model, const torch::Tensor& ids, const torch::Tensor& attention_mask,
                             const LogprobOptions& opts = {});

}  // namespace retort
