// Tokenizer: Hugging Face tokenizer.json (byte-level BPE) with the library's exact ids.
//
// Pipeline of encode(text), as in Hugging Face tokenizers:
//   1. added tokens whose "normalized" flag is false are found in the raw text
//      (leftmost-longest, with their lstrip/rstrip/single_word flags) and cut out;
//   2. the rest is normalized (NFC, ...), then added tokens with normalized=true are cut out;
//   3. each remaining span is pre-tokenized (Split regex, ByteLevel, Digits, ...);
//   4. each piece goes through the BPE merges, with a per-thread cache of pieces.
// No special tokens are added around the text (no BOS/EOS): callers that need them add
// the ids themselves. Special-token strings inside the text ARE matched, as the library does.
//
// Not supported (refused with an error at load): WordPiece/Unigram models, byte_fallback,
// BPE dropout, subword prefixes/suffixes.
#pragma once

#include <cstdint>      // defines: int32_t
#include <memory>       // defines: std::shared_ptr
#include <optional>     // defines: std::optional
#include <string>       // defines: std::string
#include <string_view>  // defines: std::string_view
#include <vector>       // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

class Tokenizer {
 public:
  // Reads a tokenizer.json; a malformed or unsupported file throws retort::Error naming
  // the file and the field.
  static Tokenizer from_file(const std::string& path);
  static Tokenizer from_json(const nlohmann::json& doc, const std::string& where);

  std::vector<int32_t> encode(std::string_view text) const;
  // Concatenates the tokens' bytes (byte-level decoder); invalid UTF-8 becomes U+FFFD.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // The normalizer alone (decode(encode(x)) == normalize(x)).
  std::string normalize(std::string_view text) const;

  std::optional<int32_t> token_to_id(const std::string& token) const;
  std::string id_to_token(int32_t id) const;  // "" for an unknown id
  // One past the largest id (model vocabulary and added tokens).
  int32_t vocab_size() const;
  bool is_special(int32_t id) const;
  const std::vector<AddedToken>& added_tokens() const;

  nlohmann::json to_json() const;
  void save(const std::string& path) const;  // atomic

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace retort
