// The attention kernels beside the model's eager path. paged_decode_attention (at the end) is
// the rollout engine's decode step over its block KV cache. chunked_attention is
// memory-efficient attention for training and long-sequence scoring on any LibTorch (the
// Debian CPU LibTorch 1.13 has no fused scaled_dot_product_attention): the queries are
// processed in chunks of rows, and backward recomputes each chunk's probabilities from the
// per-row log-sum-exp instead of keeping them (FlashAttention's backward, Dao et al. 2022,
// section 3.1 and appendix B.2):
//   forward   S = q k^T / sqrt(D) masked,  lse = logsumexp(S),  P = exp(S - lse),  O = P v
//   backward  Delta = rowsum(dO * O),  dP = dO v^T,  dS = P * (dP - Delta),
//             dq = dS k / sqrt(D),  dk = dS^T q / sqrt(D),  dv = P^T dO
// It keeps q, k, v, O and lse ([B, H, T] float32); one chunk's [B, H, n, S'] float32 scores
// exist at a time (S' = the keys the chunk may attend, found from the mask: the causal
// prefix, or one packed sequence's block), never [B, H, T, S].
//
// What it deliberately is not: a fused kernel (plain LibTorch matmuls per chunk), nor a
// replacement of the eager path where attention maps are asked for (distillation's mapped
// layers need the probabilities themselves).
//
// Dimensions: B rows, H query heads, Hkv kv heads (H = n_rep Hkv; query head h reads kv head
// h / n_rep), T queries, S keys, D head width, n queries of one chunk.
#pragma once

#include <cstdint>  // defines: int64_t

#include "common/torch_pch.h"  // defines: torch::Tensor

namespace retort {

struct AttentionChunkOptions {
  // Elements of one chunk's [B, H, n, S] float32 scores: n = max(1, chunk_elements / (B H S)).
  // Forward holds about three such tensors at once (scores, probabilities, their cast), backward
  // about five (P, dP, dS and casts). 2^24 (64 MiB) is about 146 queries of a 14-head 8k-token
  // row; 0 turns the memory-efficient path off (the eager [B, H, T, S] attention).
  int64_t chunk_elements = int64_t{1} << 24;
};

// softmax(q k^T / sqrt(D), masked where !allowed) v, chunk by chunk, differentiable in q, k, v
// (a custom autograd function).
//   q [B, H, T, D], k and v [B, Hkv, S, D] (same dtype), allowed [B or 1, 1, T, S] bool
//   -> [B, H, T, D] in q's dtype. Scores, softmax statistics and gradient accumulators are
//   float32 (float64 for float64 inputs). A query with no allowed key gets output 0 and
//   gradient 0 (the eager softmax would give NaN).
torch::Tensor chunked_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                const torch::Tensor& allowed, const AttentionChunkOptions& opts = {});

// One decode step's attention over the rollout engine's block KV cache, reading each row's
// keys and values in place: no gather into a [B, Hkv, S, D] copy, and each row costs its own
// length, not the batch's longest (the eager path pads every row to S). CPU, float32, one new
// query per row, no autograd.
//   q [B, H, 1, D]; k_pool and v_pool [slots, Hkv, D]; read_slots [B * S] int64 (row b's
//   position p lives in slot read_slots[b * S + p]); lengths [B] int64 (row b attends its
//   positions 0..lengths[b] - 1, lengths[b] >= 1) -> [B, H, 1, D] float32.
// A row's result depends on its own query, slots and cache contents only (the scores and sums
// run in a fixed order per row), so it is the same whatever the batch and thread count.
torch::Tensor paged_decode_attention(const torch::Tensor& q, const torch::Tensor& k_pool, const torch::Tensor& v_pool,
                                     const torch::Tensor& read_slots, int64_t S, const torch::Tensor& lengths);

}  // namespace retort
