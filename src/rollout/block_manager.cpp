// The BlockManager (see block_manager.h).
#include "rollout/block_manager.h"

#include <algorithm>  // defines: std::max
#include <string>     // defines: std::to_string

#include "common/error.h"  // defines: retort::Error

namespace retort {

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size) : block_size_(block_size) {
  if (num_blocks < 1 || block_size < 1) {
    throw Error(ErrorInfo{"the KV cache needs at least one block of at least one position", "rollout: block manager",
                          "num_blocks >= 1, block_size >= 1",
                          std::to_string(num_blocks) + " blocks of " + std::to_string(block_size), "raise sampling.kv_cache_mb"});
  }
  refs_.assign(static_cast<size_t>(num_blocks), 0);
  free_.reserve(static_cast<size_t>(num_blocks));
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

int64_t BlockManager::allocate() {
  if (free_.empty()) {
    throw Error(ErrorInfo{"no free KV cache block", "rollout: block manager", "a free block", "all " + std::to_string(num_blocks()) + " in use",
                          "the scheduler preempts before allocating; this is a bug"});
  }
  const int64_t b = free_.back();
  free_.pop_back();
  refs_[static_cast<size_t>(b)] = 1;
  peak_used_ = std::max(peak_used_, num_used());
  return b;
}

void BlockManager::retain(int64_t block) { ++refs_[static_cast<size_t>(block)]; }

void BlockManager::release(int64_t block) {
  if (--refs_[static_cast<size_t>(block)] == 0) free_.push_back(block);
}

void BlockManager::release_all(std::vector<int64_t>& table) {
  for (int64_t b : table) release(b);
  table.clear();
}

int64_t BlockManager::blocks_needed(const std::vector<int64_t>& table, int64_t from, int64_t to) const {
  if (to <= from) return 0;
  int64_t n = std::max<int64_t>(0, blocks_for(to) - static_cast<int64_t>(table.size()));
  const int64_t bi = from / block_size_;
  if (bi < static_cast<int64_t>(table.size()) && refs_[static_cast<size_t>(table[static_cast<size_t>(bi)])] > 1) ++n;  // copy on write
  return n;
}

bool BlockManager::append_slots(std::vector<int64_t>& table, int64_t from, int64_t to, std::vector<BlockCopy>* copies) {
  if (blocks_needed(table, from, to) > num_free()) return false;
  if (to <= from) return true;
  const int64_t bi = from / block_size_;
  if (bi < static_cast<int64_t>(table.size())) {
    int64_t& shared = table[static_cast<size_t>(bi)];
    if (refs_[static_cast<size_t>(shared)] > 1) {
      // Another sequence holds this block (a prompt's last, partly filled block): write into a copy.
      const int64_t fresh = allocate();
      copies->push_back(BlockCopy{shared, fresh, from % block_size_});
      release(shared);
      shared = fresh;
    }
  }
  while (static_cast<int64_t>(table.size()) < blocks_for(to)) table.push_back(allocate());
  return true;
}

}  // namespace retort
