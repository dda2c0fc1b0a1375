// How a training step's sequences become micro-batches at real lengths (1k-16k tokens): a
// token budget per micro-batch, packing without padding, activation checkpointing. Shared by
// SFT / distillation and the GRPO update (the `train` section of their configs).
//
// A step's loss and gradients do not depend on these settings: the recipes divide every loss
// by the step-wide count of its positions (counted over all micro-batches and ranks first),
// so the split only changes memory and speed.
#pragma once

#include <algorithm>  // defines: std::max
#include <cstdint>    // defines: int64_t
#include <string>     // defines: std::string
#include <vector>     // defines: std::vector

#include "common/config.h"  // defines: ConfigBinder
#include "common/error.h"   // defines: retort::Error

namespace retort {

struct MicroBatchConfig {
  // Tokens per micro-batch (forward + backward at once); a step's sequences are split into as
  // many micro-batches as the budget needs. 0 = the recipe's row counts (batch_size for SFT,
  // the rows of grad_accum for GRPO). A sequence longer than the budget gets a micro-batch alone.
  int64_t micro_batch_tokens = 0;
  // With a budget: concatenate a micro-batch's sequences into one row without padding
  // (attention confined to each sequence, positions restarting at 0); false = pad to the
  // longest sequence of the micro-batch (rows x longest <= budget).
  bool packing = true;
  // Recompute each decoder layer in backward instead of keeping its activations: on | off |
  // auto (on when a micro-batch holds at least 2048 tokens, where activations outgrow the
  // weights of a small model; the recomputation costs about one more forward pass).
  std::string activation_checkpointing = "auto";

  void bind(ConfigBinder& b) {
    b.field("micro_batch_tokens", micro_batch_tokens);
    b.field("packing", packing);
    b.choice("activation_checkpointing", activation_checkpointing, {"auto", "on", "off"});
  }

  void validate(const std::string& where) const {
    if (micro_batch_tokens < 0) {
      throw Error(ErrorInfo{"the token budget of a micro-batch cannot be negative", where + ": train.micro_batch_tokens",
                            ">= 0 (0 = no budget)", std::to_string(micro_batch_tokens), ""});
    }
  }

  // Whether a micro-batch of `tokens` tokens (rows x length, padding included) is checkpointed.
  bool checkpoint(int64_t tokens) const {
    if (activation_checkpointing == "on") return true;
    if (activation_checkpointing == "off") return false;
    return tokens >= 2048;
  }
};

// Splits sequences (their lengths, in order) into consecutive micro-batches under a token
// budget: packed, a micro-batch's summed length stays <= budget; padded, its rows times its
// longest length does. Every micro-batch holds at least one sequence. -> index lists.
inline std::vector<std::vector<int64_t>> split_by_token_budget(const std::vector<int64_t>& lengths, int64_t budget, bool packed) {
  std::vector<std::vector<int64_t>> out;
  int64_t sum = 0, longest = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(lengths.size()); ++i) {
    const int64_t len = lengths[static_cast<size_t>(i)];
    const int64_t rows = out.empty() ? 0 : static_cast<int64_t>(out.back().size());
    const int64_t cost = packed ? sum + len : (rows + 1) * std::max(longest, len);
    if (out.empty() || cost > budget) {
      out.emplace_back();
      sum = longest = 0;
    }
    out.back().push_back(i);
    sum += len;
    longest = std::max(longest, len);
  }
  return out;
}

}  // namespace retort
