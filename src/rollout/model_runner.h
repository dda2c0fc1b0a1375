// The ModelRunner of the rollout engine: runs one scheduled batch through the model over
// the block KV cache. It owns the pool of blocks, [num_blocks + 1, block_size, Hkv, D] per
// layer for K and for V (flattened to slots; the extra block is scratch for padding), and
// knows nothing of who runs or waits (rollout/scheduler.h).
//
// A batch is I rows (BatchItem): row i computes positions [start, start + count) of its
// sequence. The rows are left-padded to T = the longest count, so that the last column is
// every row's last position; keys are read for positions 0..S-1, S = the longest
// start + count, and masked per row (causal, and only the row's own positions).
#pragma once

#include <cstdint>  // defines: int64_t
#include <vector>   // defines: std::vector

#include "common/torch_pch.h"       // defines: torch::Tensor
#include "model/transformer.h"      // defines: Qwen2ForCausalLMImpl, PagedKV
#include "rollout/scheduler.h"      // defines: ScheduledBatch, BlockCopy

namespace retort {

class ModelRunner {
 public:
  // Allocates the pool (uninitialised: a block is written before it is read).
  ModelRunner(Qwen2ForCausalLMImpl& model, int64_t num_blocks, int64_t block_size);

  // The batch's block copies, then one forward pass -> [I, V] float32 logits of each row's last position.
  torch::Tensor run(const ScheduledBatch& batch);

  // Bytes of K and V for one position, all layers, in `dtype`: 2 * layers * Hkv * D * element size.
  static int64_t bytes_per_token(const ModelConfig& cfg, torch::Dtype dtype);

 private:
  void copy_blocks(const std::vector<BlockCopy>& copies);

  Qwen2ForCausalLMImpl& model_;
  int64_t num_blocks_, block_size_;
  PagedKV kv_;  // the pool (k, v per layer: [(num_blocks + 1) * block_size, Hkv, D]) and the step's slots
};

}  // namespace retort
