#include "tokenizer/trainer.h"

#include <algorithm>      // defines: std::sort
#include <queue>          // defines: std::priority_queue
#include <unordered_map>  // defines: std::unordered_map

#include "common/config.h"
#include "common/error.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/unicode.h"

namespace retort {

using nlohmann::json;

void BpeTrainerOptions::bind(ConfigBinder& b) {
  b.field("vocab_size", vocab_size, Range::at_least(256));
  b.field("min_frequency", min_frequency, Range::at_least(1));
  b.field("special_tokens", special_tokens);
  b.field("split_pattern", split_pattern);
  b.choice("normalizer", normalizer, {"NFC", "none"});
}

namespace {

uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

}  // namespace

json train_bpe(const std::vector<std::string>& texts, const BpeTrainerOptions& opt, BpeTrainerStats* stats) {
  if (opt.vocab_size < 256) {
    throw Error(ErrorInfo{"vocab_size is too small for a byte-level vocabulary", "tokenizer train", "at least 256",
                          std::to_string(opt.vocab_size), ""});
  }
  const std::string pattern = opt.split_pattern.empty() ? tokenizer::kQwen2SplitPattern : opt.split_pattern;
  json pre = {{"type", "Sequence"},
              {"pretokenizers",
               {{{"type", "Split"}, {"pattern", {{"Regex", pattern}}}, {"behavior", "Isolated"}, {"invert", false}},
                {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}}}}};
  json normalizer = opt.normalizer == "NFC" ? json{{"type", "NFC"}} : json();
  auto pre_tok = tokenizer::make_pre_tokenizer(pre, "tokenizer train");
  auto norm = tokenizer::make_normalizer(normalizer, "tokenizer train");

  // 1. Count pieces, exactly as encode() will cut them (special tokens are cut out first).
  std::unordered_map<std::string, int64_t> piece_counts;
  BpeTrainerStats st;
  for (const std::string& raw : texts) {
    ++st.texts;
    st.bytes += static_cast<int64_t>(raw.size());
    std::vector<std::string> chunks{raw};
    for (const std::string& special : opt.special_tokens) {
      std::vector<std::string> next;
      for (const std::string& c : chunks) {
        size_t start = 0, pos;
        while ((pos = c.find(special, start)) != std::string::npos) {
          next.push_back(c.substr(start, pos - start));
          start = pos + special.size();
        }
        next.push_back(c.substr(start));
      }
      chunks.swap(next);
    }
    for (const std::string& c : chunks) {
      std::string text = norm ? norm->normalize(c) : c;
      tokenizer::Pieces pieces;
      pieces.items.push_back(text);
      pre_tok->split(pieces);
      for (std::string_view p : pieces.items) ++piece_counts[std::string(p)];
    }
  }
  st.unique_pieces = static_cast<int64_t>(piece_counts.size());

  // 2. Start from the 256 byte tokens (ids 0..255 in byte order).
  const auto& alphabet = unicode::byte_level_alphabet();
  std::vector<std::string> tokens;  // id -> byte-level spelling
  std::unordered_map<std::string, int32_t> vocab;
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(alphabet.byte_to_utf8[b]);
    vocab[tokens.back()] = b;
  }
  // Sorted so that the result does not depend on hash-map order.
  std::vector<std::pair<std::string, int64_t>> sorted(piece_counts.begin(), piece_counts.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<Word> words;
  words.reserve(sorted.size());
  for (const auto& kv : sorted) {
    Word w;
    w.count = kv.second;
    for (char c : kv.first) w.symbols.push_back(static_cast<uint8_t>(c));
    words.push_back(std::move(w));
  }

  // 3. Pair counts and where each pair occurs.
  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;
  for (size_t wi = 0; wi < words.size(); ++wi) {
    const auto& s = words[wi].symbols;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      uint64_t k = pair_key(s[i], s[i + 1]);
      pair_counts[k] += words[wi].count;
      where[k].push_back(static_cast<int32_t>(wi));
    }
  }
  // Max-heap on (count, then smaller key): stale entries are re-checked on pop.
  using Item = std::pair<int64_t, uint64_t>;
  auto cmp = [](const Item& a, const Item& b) { return a.first != b.first ? a.first < b.first : a.second > b.second; };
  std::priority_queue<Item, std::vector<Item>, decltype(cmp)> heap(cmp);
  for (const auto& kv : pair_counts) heap.push({kv.second, kv.first});

  json merges = json::array();
  while (static_cast<int>(tokens.size()) < opt.vocab_size && !heap.empty()) {
    auto [count, key] = heap.top();
    heap.pop();
    auto pc = pair_counts.find(key);
    if (pc == pair_counts.end() || pc->second != count) continue;  // stale
    if (count < opt.min_frequency) break;
    int32_t a = static_cast<int32_t>(key >> 32), b = static_cast<int32_t>(key & 0xffffffffu);
    std::string merged = tokens[a] + tokens[b];
    int32_t new_id;
    auto existing = vocab.find(merged);
    if (existing != vocab.end()) {
      new_id = existing->second;
    } else {
      new_id = static_cast<int32_t>(tokens.size());
      tokens.push_back(merged);
      vocab[merged] = new_id;
    }
    merges.push_back(json::array({tokens[a], tokens[b]}));
    ++st.merges;

    // Re-segment every word that contains the pair, updating counts of touched pairs.
    std::vector<int32_t> word_ids = std::move(where[key]);
    where.erase(key);
    std::sort(word_ids.begin(), word_ids.end());
    word_ids.erase(std::unique(word_ids.begin(), word_ids.end()), word_ids.end());
    std::unordered_map<uint64_t, int64_t> touched;
    for (int32_t wi : word_ids) {
      Word& w = words[wi];
      auto& s = w.symbols;
      bool has = false;
      for (size_t i = 0; i + 1 < s.size(); ++i) has |= (s[i] == a && s[i + 1] == b);
      if (!has) continue;
      for (size_t i = 0; i + 1 < s.size(); ++i) touched[pair_key(s[i], s[i + 1])] -= w.count;
      std::vector<int32_t> out;
      out.reserve(s.size());
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          out.push_back(new_id);
          ++i;
        } else {
          out.push_back(s[i]);
        }
      }
      s.swap(out);
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        uint64_t k = pair_key(s[i], s[i + 1]);
        touched[k] += w.count;
        where[k].push_back(wi);
      }
    }
    for (const auto& kv : touched) {
      if (kv.second == 0) continue;
      int64_t& c = pair_counts[kv.first];
      c += kv.second;
      if (c <= 0) pair_counts.erase(kv.first);
      else heap.push({c, kv.first});
    }
    pair_counts.erase(key);
  }

  json vocab_j = json::object();
  for (size_t i = 0; i < tokens.size(); ++i) vocab_j[tokens[i]] = static_cast<int32_t>(i);
  json added = json::array();
  int32_t next_id = static_cast<int32_t>(tokens.size());
  for (const std::string& s : opt.special_tokens) {
    added.push_back({{"id", next_id++}, {"content", s}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", true}});
  }
  json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false}, {"use_regex", false}};
  json doc = {{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", added},
              {"normalizer", normalizer},
              {"pre_tokenizer", pre},
              {"post_processor", byte_level},
              {"decoder", byte_level},
              {"model",
               {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", ""},
                {"end_of_word_suffix", ""},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", vocab_j},
                {"merges", merges}}}};
  if (stats) *stats = st;
  return doc;
}

}  // namespace retort
