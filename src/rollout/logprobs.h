// token_logprobs — the one function for per-token log-probabilities: the policy's (with
// autograd), the old policy's and the reference/teacher's (under torch::NoGradGuard), and
// `retort score`.
#pragma once

#include <cstdint>  // defines: int64_t

#include "common/torch_pch.h"    // defines: torch::Tensor
#include "model/transformer.h"  // defines: Qwen2ForCausalLMImpl

namespace retort {

struct LogprobOptions {
  int64_t micro_batch = 0;   // rows per forward pass (bounds the [n, T, V] logits); 0 = all rows at once
  double temperature = 1.0;  // logits are divided by it before the softmax (1 = the model itself)
};

// log p(ids[n, t] | ids[n, <t]) for t = 1..T-1:  lp = logit[t-1, ids[t]] - logsumexp(logit[t-1, :])
// ids [N, T] int64, attention_mask [N, T] (1 = token; prompts left-padded, completions
// right-padded; undefined = all tokens) -> [N, T-1] float32, 0 where the token or the one
// before it is padding. Differentiable when grad mode is on.
torch::Tensor token_logprobs(Qwen2ForCausalLMImpl& model, const torch::Tensor& ids, const torch::Tensor& attention_mask,
                             const LogprobOptions& opts = {});

}  // namespace retort
