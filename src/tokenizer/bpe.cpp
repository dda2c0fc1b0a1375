#include "tokenizer/bpe.h"

#include <algorithm>  // defines: std::max
#include <queue>      // defines: std::priority_queue

#include "common/error.h"
#include "tokenizer/unicode.h"

namespace retort::tokenizer {

void MergeTable::build(const std::vector<Entry>& entries) {
  size_t cap = 16;
  while (cap < entries.size() * 2) cap <<= 1;
  slots_.assign(cap, Entry{kEmpty, 0, 0});
  mask_ = cap - 1;
  count_ = 0;
  for (const auto& e : entries) {
    size_t i = hash(e.key) & mask_;
    while (slots_[i].key != kEmpty && slots_[i].key != e.key) i = (i + 1) & mask_;
    // A duplicated merge keeps its first (lowest) rank, as the reference does.
    if (slots_[i].key == e.key) continue;
    slots_[i] = e;
    ++count_;
  }
}

BpeModel::BpeModel(std::unordered_map<std::string, int32_t> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options,
                   const std::string& where)
    : vocab_(std::move(vocab)), merges_(merges), options_(options) {
  int32_t max_id = -1;
  for (const auto& kv : vocab_) max_id = std::max(max_id, kv.second);
  id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  for (const auto& kv : vocab_) {
    if (kv.second < 0) throw Error(ErrorInfo{"negative token id in the vocabulary", where, "ids >= 0", kv.first, ""});
    id_to_token_[kv.second] = kv.first;
  }
  const auto& alphabet = unicode::byte_level_alphabet();
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(alphabet.byte_to_utf8[b]);
    if (it == vocab_.end()) {
      throw Error(ErrorInfo{"the vocabulary lacks a byte of the byte-level alphabet", where + ": model.vocab",
                            "all 256 byte tokens", "no token for byte " + std::to_string(b),
                            "retort reads byte-level BPE vocabularies (GPT-2, Qwen, DeepSeek, Llama 3)"});
    }
    byte_ids_[b] = it->second;
  }
  std::vector<MergeTable::Entry> entries;
  entries.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& m = merges[r];
    auto a = vocab_.find(m.first), b = vocab_.find(m.second), ab = vocab_.find(m.first + m.second);
    if (a == vocab_.end() || b == vocab_.end() || ab == vocab_.end()) {
      throw Error(ErrorInfo{"merge " + std::to_string(r) + " refers to a token that is not in the vocabulary",
                            where + ": model.merges", "both parts and their concatenation in model.vocab",
                            quote_for_error(m.first + " " + m.second), "the file is corrupt or was cut"});
    }
    uint64_t key = (uint64_t(uint32_t(a->second)) << 32) | uint32_t(b->second);
    entries.push_back({key, static_cast<int32_t>(r), ab->second});
  }
  table_.build(entries);
}

void BpeModel::merge_word(std::vector<int32_t>& symbols) const {
  const size_t n = symbols.size();
  if (n < 2) return;
  if (n <= 48) {
    // Short pieces (nearly all): repeatedly merge the leftmost lowest-rank pair.
    while (symbols.size() > 1) {
      int32_t best_rank = INT32_MAX, best_merged = -1;
      size_t best_pos = 0;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        const MergeTable::Entry* e = table_.find(symbols[i], symbols[i + 1]);
        if (e && e->rank < best_rank) {
          best_rank = e->rank;
          best_merged = e->merged;
          best_pos = i;
        }
      }
      if (best_merged < 0) break;
      symbols[best_pos] = best_merged;
      symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best_pos) + 1);
    }
    return;
  }
  // Long pieces (runs of spaces, long numbers in some vocabularies): a linked list and a
  // heap of candidate merges, O(n log n). Stale heap entries are skipped on pop.
  std::vector<int32_t> prev(n), next(n);
  std::vector<char> alive(n, 1);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  struct Cand {
    int32_t rank, pos, left_id, right_id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  auto push = [&](int32_t i) {
    if (i < 0 || next[i] < 0) return;
    const MergeTable::Entry* e = table_.find(symbols[i], symbols[next[i]]);
    if (e) heap.push({e->rank, i, symbols[i], symbols[next[i]]});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    int32_t i = c.pos;
    if (!alive[i] || next[i] < 0 || symbols[i] != c.left_id || symbols[next[i]] != c.right_id) continue;
    const MergeTable::Entry* e = table_.find(symbols[i], symbols[next[i]]);
    int32_t j = next[i];
    symbols[i] = e->merged;
    alive[j] = 0;
    next[i] = next[j];
    if (next[j] >= 0) prev[next[j]] = i;
    push(prev[i]);
    push(i);
  }
  size_t w = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) symbols[w++] = symbols[i];
  symbols.resize(w);
}

void BpeModel::encode_piece(std::string_view bytes, std::vector<int32_t>& out) const {
  if (options_.ignore_merges) {
    auto it = vocab_.find(unicode::bytes_to_byte_level(bytes));
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  thread_local std::vector<int32_t> symbols;
  symbols.clear();
  for (char c : bytes) symbols.push_back(byte_ids_[static_cast<uint8_t>(c)]);
  merge_word(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

}  // namespace retort::tokenizer
