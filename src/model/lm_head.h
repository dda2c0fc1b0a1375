// The LM head in chunks of tokens: every vocabulary-sized quantity (token log-probs, entropy,
// cross-entropy, the logit distillation losses) is computed from the final hidden states and
// the head weight a few hundred tokens at a time, so that no [N, V] float32 tensor exists for
// more than one chunk. Backward saves only the inputs (hidden states, weight) and recomputes
// each chunk's logits (the technique of Liger's fused linear cross-entropy and of Apple's
// "Cut Your Losses in Large-Vocabulary Language Models", 2024).
//
// What it deliberately is not: a fused kernel. It is plain LibTorch: per chunk one matmul,
// the quantity, and in backward one matmul for the logits and two for the gradients.
//
// Dimensions: N tokens (rows of the flattened batch), C hidden width, V vocabulary, K
// quantities per token, n tokens of one chunk.
#pragma once

#include <cstdint>     // defines: int64_t
#include <functional>  // defines: std::function

#include "common/torch_pch.h"  // defines: torch::Tensor

namespace retort {

// A per-token quantity of one chunk: logits [n, V] float32 (rows begin .. begin + n of the
// call) -> [n, K] float32. Called in forward without autograd, and again in backward with
// autograd on `logits` only; it must be a pure function of its arguments (no randomness).
using HeadChunkFn = std::function<torch::Tensor(const torch::Tensor& logits, int64_t begin, int64_t n)>;

struct HeadChunkOptions {
  // Elements of one chunk's [n, V] float32 logits: n = max(1, chunk_elements / V). 2^25
  // (128 MiB) is about 220 tokens of Qwen's 151,936-token vocabulary and 8k tokens of a
  // 4k vocabulary; smaller chunks save memory, larger ones amortise the matmul.
  int64_t chunk_elements = int64_t{1} << 25;
};

// out[i, :] = fn(hidden[i] . weight^T) for every row i, computed chunk by chunk.
//   hidden [N, C] (any float dtype; taken to float32 in the chunk), weight [V, C]
//   -> [N, K] float32, differentiable in hidden and weight (a custom autograd function that
//   saves only its inputs and recomputes the chunk's logits in backward).
torch::Tensor chunked_head(const torch::Tensor& hidden, const torch::Tensor& weight, int64_t K, HeadChunkFn fn,
                           const HeadChunkOptions& opts = {});

// log p(target) at temperature tau, and optionally the entropy of softmax(logits / tau):
//   lp = z[target] - logsumexp(z),  H = logsumexp(z) - sum_v softmax(z)_v z_v,  z = logits / tau
// hidden [N, C], weight [V, C], targets [N] int64 -> [N, 1] (lp) or [N, 2] (lp, H) float32.
torch::Tensor head_token_logprobs(const torch::Tensor& hidden, const torch::Tensor& weight, const torch::Tensor& targets,
                                  double temperature = 1.0, bool entropy = false, const HeadChunkOptions& opts = {});

}  // namespace retort
