// Normalizers and pre-tokenizers of Hugging Face tokenizer.json files (the byte-level
// subset: NFC/NFD/NFKC/NFKD/Sequence normalizers; Split, ByteLevel, Digits and Sequence
// pre-tokenizers), with Hugging Face's splitting semantics.
//
// A pre-tokenizer refines a list of pieces (string views into buffers that outlive the
// call); the BPE model then encodes each piece on its own. Split patterns run through
// PCRE2 with Unicode properties (UTF + UCP) and the JIT.
#pragma once

#include <deque>        // defines: std::deque
#include <memory>       // defines: std::unique_ptr
#include <string>       // defines: std::string
#include <string_view>  // defines: std::string_view
#include <vector>       // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort::tokenizer {

// Pieces of one text; `arena` owns any bytes that are not in the caller's text (for
// example a prefix space added by ByteLevel(add_prefix_space)).
struct Pieces {
  std::vector<std::string_view> items;
  std::deque<std::string> arena;
};

// `pattern` with its Unicode classes on ICU's tables where PCRE2's are older (see the .cpp);
// what Regex compiles.
std::string current_unicode_pattern(const std::string& pattern);

// A compiled regular expression (PCRE2, UTF + UCP, JIT when available). Thread-safe.
class Regex {
 public:
  explicit Regex(const std::string& pattern, const std::string& where);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Non-overlapping matches in `subject`, left to right, as (start, end) byte offsets.
  // An empty match advances by one character, as Rust's find_iter does.
  void find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>& out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
  bool jit_ = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(std::string_view text) const = 0;
  virtual nlohmann::json to_json() const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void split(Pieces& pieces) const = 0;
  virtual nlohmann::json to_json() const = 0;
  // True when this is (or contains) a ByteLevel pre-tokenizer.
  virtual bool byte_level() const { return false; }
};

// Builds from the "normalizer" / "pre_tokenizer" objects of tokenizer.json; null gives
// nullptr. Unsupported types throw retort::Error naming the type and the supported ones.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& where);
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& where);

// The split pattern of Qwen2/2.5/3 (also the default of `retort tokenizer train`).
extern const char* const kQwen2SplitPattern;

}  // namespace retort::tokenizer
