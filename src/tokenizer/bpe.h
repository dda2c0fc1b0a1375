// The byte-level BPE model: vocabulary, merge ranks, and the merge loop for one piece.
//
// A piece (raw bytes) starts as one symbol per byte (the byte's id in the byte-level
// alphabet); merges are applied lowest rank first, leftmost first among equal ranks,
// exactly as Hugging Face's BPE::merge_word does. Merge lookups go through a flat
// open-addressing table keyed by the two symbol ids; results are cached per piece.
#pragma once

#include <cstdint>        // defines: int32_t, uint64_t
#include <string>         // defines: std::string
#include <string_view>    // defines: std::string_view
#include <unordered_map>  // defines: std::unordered_map
#include <vector>         // defines: std::vector

namespace retort::tokenizer {

// Flat hash map from a packed pair of ids to (rank, merged id). Read-only after build.
class MergeTable {
 public:
  struct Entry {
    uint64_t key;     // (left << 32) | right; kEmpty when unused
    int32_t rank;     // position in the merges list: lower merges first
    int32_t merged;   // id of left+right
  };
  static constexpr uint64_t kEmpty = ~0ull;

  void build(const std::vector<Entry>& entries);
  // hot loop: no allocation
  const Entry* find(int32_t left, int32_t right) const {
    if (slots_.empty()) return nullptr;
    uint64_t key = (uint64_t(uint32_t(left)) << 32) | uint32_t(right);
    size_t i = hash(key) & mask_;
    while (true) {
      const Entry& e = slots_[i];
      if (e.key == key) return &e;
      if (e.key == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }
  size_t size() const { return count_; }

 private:
  static uint64_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
  }
  std::vector<Entry> slots_;
  size_t mask_ = 0, count_ = 0;
};

struct BpeOptions {
  bool ignore_merges = false;  // a piece that is itself in the vocabulary is one token
};

class BpeModel {
 public:
  // vocab: token (byte-level spelling) -> id; merges: pairs of tokens, in rank order.
  // `where` names the file in errors (a merge whose parts or result are missing).
  BpeModel(std::unordered_map<std::string, int32_t> vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
           const std::string& where);

  // Appends the ids of one piece of raw bytes.
  // hot loop: allocation only on cache misses
  void encode_piece(std::string_view bytes, std::vector<int32_t>& out) const;

  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }
  const std::vector<std::pair<std::string, std::string>>& merges() const { return merges_; }
  const std::vector<std::string>& id_to_token() const { return id_to_token_; }
  const BpeOptions& options() const { return options_; }

 private:
  void merge_word(std::vector<int32_t>& symbols) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<std::pair<std::string, std::string>> merges_;
  MergeTable table_;
  int32_t byte_ids_[256];  // id of each byte's one-character token
  BpeOptions options_;
};

}  // namespace retort::tokenizer
