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
  // auto (on when the micro-batch's saved activations would pass kAutoCheckpointBytes; the
  // recomputation costs about one more forward pass, which a small model at short lengths
  // should not pay).
  std::string activation_checkpointing = "auto";
  // glibc's mmap threshold at 1 MiB during the step's forward, backward and optimizer step
  // (TrainingHeapScope, common/platform.h): on | off | auto (on when one float32 hidden state
  // of the step's largest micro-batch, tokens x width x 4 bytes, reaches kAutoCompactHeapBytes).
  // On, the heap holds only live tensors: 280-300 MB less for a 2-layer Qwen2.5-0.5B shape at
  // 1k-2k tokens, 780-910 MB at 8k (docs/long_traces.md). The price is a page fault per 4 KiB
  // of every fresh mapping, which a narrow model's step cannot hide: the demo's teacher SFT ran
  // 1.37x faster and its GRPO steps 1.63x faster without it, the 0.5B shape 1.14x at 1k tokens
  // and 1.05x at 2k.
  std::string compact_heap = "auto";

  // Activations a decoder layer keeps for backward, per token: about 20 x hidden float32 values
  // (the normed inputs, q/k/v, the attention output, gate/up and their product with I ~ 5C).
  // Above 1 GiB for the micro-batch, "auto" checkpoints: a Qwen2.5-0.5B shape (24 layers, C 896)
  // from ~600 tokens, 1.5B (28 layers, C 1536) from ~300; the demo's 4-layer, 96-wide teacher
  // never.
  static constexpr double kAutoCheckpointBytes = 1024.0 * 1024.0 * 1024.0;
  static constexpr double kActivationFloatsPerHidden = 20.0;
  // 12 MiB: Qwen2.5-0.5B (C 896) from 3.5k tokens a micro-batch, 1.5B (C 1536) from 2k; the
  // demo's steps stay under 8 MiB (a GRPO batch of 64 rows x ~270 tokens at the teacher's 96).
  static constexpr double kAutoCompactHeapBytes = 12.0 * 1024.0 * 1024.0;

  void bind(ConfigBinder& b) {
    b.field("micro_batch_tokens", micro_batch_tokens, Range::at_least(0).up_to(1 << 30));
    b.field("packing", packing);
    b.choice("activation_checkpointing", activation_checkpointing, {"auto", "on", "off"});
    b.choice("compact_heap", compact_heap, {"auto", "on", "off"});
  }

  void validate(const std::string& where) const {
    if (micro_batch_tokens < 0) {
      throw Error(ErrorInfo{"the token budget of a micro-batch cannot be negative", where + ": train.micro_batch_tokens",
                            ">= 0 (0 = no budget)", std::to_string(micro_batch_tokens), ""});
    }
  }

  // Whether a micro-batch of `tokens` tokens (rows x length, padding included) of a model with
  // `layers` decoder layers of width `hidden` is checkpointed.
  bool checkpoint(int64_t tokens, int64_t hidden, int64_t layers) const {
    if (activation_checkpointing == "on") return true;
    if (activation_checkpointing == "off") return false;
    const double bytes = static_cast<double>(tokens) * static_cast<double>(layers) * kActivationFloatsPerHidden *
                         static_cast<double>(hidden) * 4.0;
    return bytes >= kAutoCheckpointBytes;
  }

  // Whether a step whose largest micro-batch holds `tokens` tokens (rows x length, padding
  // included) of models at most `hidden` wide runs under the compact heap.
  bool compact_heap_for(int64_t tokens, int64_t hidden) const {
    if (compact_heap == "on") return true;
    if (compact_heap == "off") return false;
    return static_cast<double>(tokens) * static_cast<double>(hidden) * 4.0 >= kAutoCompactHeapBytes;
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
