#include "tokenizer/tokenizer.h"

#include <algorithm>      // defines: std::max
#include <atomic>         // defines: std::atomic
#include <deque>          // defines: std::deque
#include <unordered_map>  // defines: std::unordered_map

#include "common/config.h"
#include "common/error.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/unicode.h"

namespace retort {

using nlohmann::json;
using tokenizer::BpeModel;
using tokenizer::Pieces;

namespace {

// Leftmost-longest matcher over the added tokens (a byte trie). Small: a few hundred
// tokens at most, nearly all starting with '<'.
class AddedMatcher {
 public:
  void add(const std::string& s, int index) {
    if (s.empty()) return;
    int node = 0;
    for (unsigned char c : s) {
      auto it = nodes_[node].next.find(c);
      if (it == nodes_[node].next.end()) {
        nodes_.push_back({});
        nodes_[node].next[c] = static_cast<int>(nodes_.size() - 1);
        node = static_cast<int>(nodes_.size() - 1);
      } else {
        node = it->second;
      }
    }
    nodes_[node].token = index;
    first_[static_cast<unsigned char>(s[0])] = true;
  }
  bool empty() const { return nodes_.size() == 1; }
  // Longest token starting at `pos`: (index, length) or index -1.
  std::pair<int, size_t> longest_at(std::string_view text, size_t pos) const {
    if (!first_[static_cast<unsigned char>(text[pos])]) return {-1, 0};
    int node = 0, best = -1;
    size_t best_len = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      auto it = nodes_[node].next.find(static_cast<unsigned char>(text[i]));
      if (it == nodes_[node].next.end()) break;
      node = it->second;
      if (nodes_[node].token >= 0) {
        best = nodes_[node].token;
        best_len = i + 1 - pos;
      }
    }
    return {best, best_len};
  }

 private:
  struct Node {
    std::unordered_map<unsigned char, int> next;
    int token = -1;
  };
  std::vector<Node> nodes_{Node{}};
  bool first_[256] = {};
};

// A span of the input: either an added token (id >= 0) or text still to be tokenized.
struct Span {
  std::string_view text;
  int32_t added_id = -1;
};

bool ends_with_word_char(std::string_view s) {
  if (s.empty()) return false;
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  size_t j = i;
  return unicode::is_alphanumeric(unicode::next_code_point(s, j)) || s[i] == '_';
}
bool starts_with_word_char(std::string_view s) {
  if (s.empty()) return false;
  size_t i = 0;
  return unicode::is_alphanumeric(unicode::next_code_point(s, i)) || s[0] == '_';
}

}  // namespace

struct Tokenizer::Impl {
  std::string where;
  json source;  // the original document, for fields retort does not interpret (post_processor, ...)
  std::unique_ptr<tokenizer::Normalizer> normalizer;
  std::unique_ptr<tokenizer::PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, int32_t> added_by_content;
  std::unordered_map<int32_t, size_t> added_by_id;
  AddedMatcher raw_matcher, normalized_matcher;
  int32_t vocab_size = 0;
  uint64_t instance_id = 0;

  // Cuts added tokens out of `spans` (only the text spans), following the library's
  // find_matches: leftmost-longest, single_word boundaries, lstrip/rstrip widening.
  void split_added(std::vector<Span>& spans, const AddedMatcher& matcher) const {
    if (matcher.empty()) return;
    std::vector<Span> out;
    for (const Span& sp : spans) {
      if (sp.added_id >= 0 || sp.text.empty()) {
        out.push_back(sp);
        continue;
      }
      std::string_view s = sp.text;
      size_t start_offset = 0, pos = 0;
      while (pos < s.size()) {
        auto [index, len] = matcher.longest_at(s, pos);
        if (index < 0) {
          ++pos;
          continue;
        }
        const AddedToken& tok = added[static_cast<size_t>(index)];
        size_t start = pos, stop = pos + len;
        if (tok.single_word) {
          bool start_ok = start == 0 || !ends_with_word_char(s.substr(0, start));
          bool stop_ok = stop == s.size() || !starts_with_word_char(s.substr(stop));
          if (!start_ok || !stop_ok) {
            pos = stop;  // the library's iterator moves past a rejected match
            continue;
          }
        }
        if (tok.lstrip) {
          size_t ns = start;
          while (ns > 0) {
            size_t k = ns - 1;
            while (k > 0 && (static_cast<uint8_t>(s[k]) & 0xC0) == 0x80) --k;
            size_t kk = k;
            if (!unicode::is_whitespace(unicode::next_code_point(s, kk))) break;
            ns = k;
          }
          start = std::max(ns, start_offset);
        }
        if (tok.rstrip) {
          while (stop < s.size()) {
            size_t k = stop;
            if (!unicode::is_whitespace(unicode::next_code_point(s, k))) break;
            stop = k;
          }
        }
        if (start_offset < start) out.push_back({s.substr(start_offset, start - start_offset), -1});
        out.push_back({s.substr(start, stop - start), tok.id});
        start_offset = stop;
        pos = stop;
      }
      if (start_offset < s.size()) out.push_back({s.substr(start_offset), -1});
    }
    spans.swap(out);
  }
};

// ---------------------------------------------------------------------------------------
// Loading

namespace {

const json& require(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) {
    throw Error(ErrorInfo{std::string("missing field '") + key + "'", where, std::string("a tokenizer.json with '") + key + "'",
                          "no such field", "is this a Hugging Face tokenizer.json?"});
  }
  return *it;
}

}  // namespace

Tokenizer Tokenizer::from_file(const std::string& path) { return from_json(load_json_file(path), path); }

Tokenizer Tokenizer::from_json(const json& doc, const std::string& where) {
  static std::atomic<uint64_t> next_instance{1};
  auto impl = std::make_shared<Impl>();
  impl->where = where;
  impl->instance_id = next_instance++;
  if (!doc.is_object()) throw Error(ErrorInfo{"a tokenizer file must be a JSON object", where, "an object", doc.type_name(), ""});
  impl->source = doc;
  try {
    const json& model = require(doc, "model", where);
    std::string type = model.value("type", "BPE");
    if (type != "BPE") {
      throw Error(ErrorInfo{"unsupported tokenizer model", where + ": model.type", "BPE", quote_for_error(type),
                            "retort reads byte-level BPE tokenizers (GPT-2, Qwen, DeepSeek, Llama 3)"});
    }
    auto refuse_if = [&](bool cond, const std::string& field, const std::string& got) {
      if (cond) throw Error(ErrorInfo{"unsupported BPE option", where + ": model." + field, "not set", got, ""});
    };
    refuse_if(model.contains("dropout") && !model["dropout"].is_null(), "dropout", model.value("dropout", json()).dump());
    refuse_if(model.value("byte_fallback", false), "byte_fallback", "true");
    auto nonempty_string = [&](const char* k) { return model.contains(k) && model[k].is_string() && !model[k].get<std::string>().empty(); };
    refuse_if(nonempty_string("continuing_subword_prefix"), "continuing_subword_prefix", model.value("continuing_subword_prefix", json()).dump());
    refuse_if(nonempty_string("end_of_word_suffix"), "end_of_word_suffix", model.value("end_of_word_suffix", json()).dump());

    const json& vocab_j = require(model, "vocab", where + ": model");
    if (!vocab_j.is_object()) throw Error(ErrorInfo{"model.vocab must be an object", where, "{token: id}", vocab_j.type_name(), ""});
    std::unordered_map<std::string, int32_t> vocab;
    vocab.reserve(vocab_j.size());
    for (auto it = vocab_j.begin(); it != vocab_j.end(); ++it) {
      if (!it.value().is_number_integer())
        throw Error(ErrorInfo{"a vocabulary id is not an integer", where + ": model.vocab[" + quote_for_error(it.key()) + "]",
                              "an integer", it.value().dump(), ""});
      vocab.emplace(it.key(), it.value().get<int32_t>());
    }
    // Merges come in two stored forms: "a b" strings (older files) and ["a", "b"] pairs.
    std::vector<std::pair<std::string, std::string>> merges;
    const json& merges_j = require(model, "merges", where + ": model");
    merges.reserve(merges_j.size());
    for (size_t i = 0; i < merges_j.size(); ++i) {
      const json& m = merges_j[i];
      if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          throw Error(ErrorInfo{"a merge is not two tokens separated by one space", where + ": model.merges[" + std::to_string(i) + "]",
                                "\"a b\"", quote_for_error(s), ""});
        merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
      } else {
        throw Error(ErrorInfo{"a merge has the wrong form", where + ": model.merges[" + std::to_string(i) + "]",
                              "\"a b\" or [\"a\", \"b\"]", quote_for_error(m.dump()), ""});
      }
    }
    tokenizer::BpeOptions opts;
    opts.ignore_merges = model.value("ignore_merges", false);
    impl->model = std::make_unique<BpeModel>(std::move(vocab), merges, opts, where);

    impl->normalizer = tokenizer::make_normalizer(doc.value("normalizer", json()), where);
    impl->pre_tokenizer = tokenizer::make_pre_tokenizer(doc.value("pre_tokenizer", json()), where);
    bool byte_level_decoder = false;
    if (doc.contains("decoder") && doc["decoder"].is_object()) {
      const json& d = doc["decoder"];
      std::string dt = d.value("type", "");
      if (dt == "ByteLevel") byte_level_decoder = true;
      if (dt == "Sequence")
        for (const auto& sub : d.value("decoders", json::array())) byte_level_decoder |= sub.value("type", "") == "ByteLevel";
    }
    if (!byte_level_decoder && !(impl->pre_tokenizer && impl->pre_tokenizer->byte_level())) {
      throw Error(ErrorInfo{"not a byte-level tokenizer", where, "a ByteLevel pre-tokenizer or decoder", "neither",
                            "retort reads byte-level BPE tokenizers (GPT-2, Qwen, DeepSeek, Llama 3)"});
    }

    int32_t max_id = static_cast<int32_t>(impl->model->id_to_token().size()) - 1;
    for (const auto& a : doc.value("added_tokens", json::array())) {
      AddedToken t;
      t.id = a.at("id").get<int32_t>();
      t.content = a.at("content").get<std::string>();
      t.special = a.value("special", false);
      t.single_word = a.value("single_word", false);
      t.lstrip = a.value("lstrip", false);
      t.rstrip = a.value("rstrip", false);
      t.normalized = a.value("normalized", !t.special);
      if (t.content.empty()) throw Error(ErrorInfo{"an added token is empty", where + ": added_tokens", "non-empty content", "\"\"", ""});
      impl->added_by_content[t.content] = t.id;
      impl->added_by_id[t.id] = impl->added.size();
      max_id = std::max(max_id, t.id);
      impl->added.push_back(t);
    }
    for (size_t i = 0; i < impl->added.size(); ++i) {
      const AddedToken& t = impl->added[i];
      if (t.normalized) {
        // Matched in normalized text, so its own content is normalized first.
        std::string c = impl->normalizer ? impl->normalizer->normalize(t.content) : t.content;
        impl->normalized_matcher.add(c, static_cast<int>(i));
      } else {
        impl->raw_matcher.add(t.content, static_cast<int>(i));
      }
    }
    impl->vocab_size = max_id + 1;
  } catch (const json::exception& e) {
    throw Error(ErrorInfo{"malformed tokenizer file", where, "the tokenizer.json schema", e.what(), ""});
  }
  Tokenizer t;
  t.impl_ = impl;
  return t;
}

// ---------------------------------------------------------------------------------------
// Encoding

namespace {

// Per-thread piece cache: piece bytes -> ids. Bounded; cleared when full or when another
// tokenizer instance uses the thread.
struct PieceCache {
  uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<int32_t>> map;
  static constexpr size_t kMaxEntries = 1 << 17;
};

// Replaces invalid UTF-8 with U+FFFD so that the regex engine can skip its own checks.
std::string repair_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    size_t start = i;
    uint32_t cp = unicode::next_code_point(s, i);
    if (cp == 0xFFFD && !(i - start == 3 && s.substr(start, 3) == "\xEF\xBF\xBD")) unicode::append_utf8(out, 0xFFFD);
    else out.append(s.substr(start, i - start));
  }
  return out;
}

}  // namespace

std::string Tokenizer::normalize(std::string_view text) const {
  return impl_->normalizer ? impl_->normalizer->normalize(text) : std::string(text);
}

std::vector<int32_t> Tokenizer::encode(std::string_view input) const {
  const Impl& im = *impl_;
  std::string repaired;
  if (!unicode::is_valid_utf8(input)) {
    repaired = repair_utf8(input);
    input = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(input.size() / 3 + 4);

  // 1. Added tokens in the raw text.
  std::vector<Span> spans{{input, -1}};
  im.split_added(spans, im.raw_matcher);

  // 2. Normalize each text span (its bytes must outlive the views below).
  std::deque<std::string> normalized_store;
  if (im.normalizer) {
    for (Span& sp : spans) {
      if (sp.added_id >= 0) continue;
      normalized_store.push_back(im.normalizer->normalize(sp.text));
      sp.text = normalized_store.back();
    }
  }
  im.split_added(spans, im.normalized_matcher);

  thread_local PieceCache cache;
  if (cache.owner != im.instance_id) {
    cache.map.clear();
    cache.owner = im.instance_id;
  }
  Pieces pieces;
  for (const Span& sp : spans) {
    if (sp.added_id >= 0) {
      ids.push_back(sp.added_id);
      continue;
    }
    if (sp.text.empty()) continue;
    // 3. Pre-tokenize.
    pieces.items.assign(1, sp.text);
    pieces.arena.clear();
    if (im.pre_tokenizer) im.pre_tokenizer->split(pieces);
    // 4. BPE each piece, through the cache.
    for (std::string_view piece : pieces.items) {
      if (piece.size() <= 64) {
        auto it = cache.map.find(std::string(piece));
        if (it != cache.map.end()) {
          ids.insert(ids.end(), it->second.begin(), it->second.end());
          continue;
        }
        size_t before = ids.size();
        im.model->encode_piece(piece, ids);
        if (cache.map.size() >= PieceCache::kMaxEntries) cache.map.clear();
        cache.map.emplace(std::string(piece), std::vector<int32_t>(ids.begin() + before, ids.end()));
      } else {
        im.model->encode_piece(piece, ids);
      }
    }
  }
  return ids;
}

// ---------------------------------------------------------------------------------------
// Decoding and accessors

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  const Impl& im = *impl_;
  std::string bytes;
  for (int32_t id : ids) {
    auto ai = im.added_by_id.find(id);
    std::string token;
    if (ai != im.added_by_id.end()) {
      const AddedToken& t = im.added[ai->second];
      if (skip_special && t.special) continue;
      token = t.content;
    } else if (id >= 0 && static_cast<size_t>(id) < im.model->id_to_token().size()) {
      token = im.model->id_to_token()[id];
    } else {
      continue;  // unknown ids are skipped, as the library does
    }
    // A token outside the byte-level alphabet (e.g. "<｜User｜>") contributes its own bytes.
    std::string raw;
    if (unicode::byte_level_to_bytes(token, raw)) bytes += raw;
    else bytes += token;
  }
  if (unicode::is_valid_utf8(bytes)) return bytes;
  return repair_utf8(bytes);
}

std::optional<int32_t> Tokenizer::token_to_id(const std::string& token) const {
  auto a = impl_->added_by_content.find(token);
  if (a != impl_->added_by_content.end()) return a->second;
  auto v = impl_->model->vocab().find(token);
  if (v != impl_->model->vocab().end()) return v->second;
  return std::nullopt;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  auto ai = impl_->added_by_id.find(id);
  if (ai != impl_->added_by_id.end()) return impl_->added[ai->second].content;
  const auto& table = impl_->model->id_to_token();
  if (id >= 0 && static_cast<size_t>(id) < table.size()) return table[id];
  return "";
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

bool Tokenizer::is_special(int32_t id) const {
  auto ai = impl_->added_by_id.find(id);
  return ai != impl_->added_by_id.end() && impl_->added[ai->second].special;
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }

json Tokenizer::to_json() const {
  return impl_->source;
}

void Tokenizer::save(const std::string& path) const { write_file_atomic(path, to_json().dump(2) + "\n"); }

}  // namespace retort
