// The BlockManager of the rollout engine: which KV cache blocks are free, and how many
// sequences hold each one. A block holds the keys and values of block_size consecutive
// positions of one sequence (or of a prompt shared by its G completions: then its reference
// count is the number of holders, and a holder that must write into it copies it first).
// Bookkeeping only, Torch-free: the tensors live in the engine (rollout/engine.h).
#pragma once

#include <cstdint>  // defines: int64_t
#include <vector>   // defines: std::vector

#include "rollout/sequence.h"  // defines: Sequence

namespace retort {

// Copy the first `rows` positions of block `src` into block `dst` (copy on write).
struct BlockCopy {
  int64_t src = 0, dst = 0, rows = 0;
};

class BlockManager {
 public:
  BlockManager(int64_t num_blocks, int64_t block_size);

  int64_t num_blocks() const { return static_cast<int64_t>(refs_.size()); }
  int64_t block_size() const { return block_size_; }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_used() const { return num_blocks() - num_free(); }
  int64_t peak_used() const { return peak_used_; }
  int64_t ref_count(int64_t block) const { return refs_[static_cast<size_t>(block)]; }
  // Blocks that hold `tokens` positions: ceil(tokens / block_size).
  int64_t blocks_for(int64_t tokens) const { return (tokens + block_size_ - 1) / block_size_; }

  // A free block with one holder. Precondition: num_free() > 0 (throws retort::Error otherwise).
  int64_t allocate();
  void retain(int64_t block);   // one more holder
  void release(int64_t block);  // one holder fewer; free at zero
  void release_all(std::vector<int64_t>& table);  // releases each block, clears the table

  // Blocks that append_slots(table, from, to) would allocate.
  int64_t blocks_needed(const std::vector<int64_t>& table, int64_t from, int64_t to) const;
  // Makes positions [from, to) of a sequence whose table holds positions [0, from) writable:
  // new blocks at the end, and a copy of a shared block that position `from` falls in (its
  // first from % block_size rows, appended to `copies`). Returns false, changing nothing, when
  // there are not enough free blocks.
  bool append_slots(std::vector<int64_t>& table, int64_t from, int64_t to, std::vector<BlockCopy>* copies);

 private:
  int64_t block_size_;
  std::vector<int64_t> refs_;  // [num_blocks] holders of each block
  std::vector<int64_t> free_;  // stack of free block ids (lowest id on top)
  int64_t peak_used_ = 0;
};

}  // namespace retort
