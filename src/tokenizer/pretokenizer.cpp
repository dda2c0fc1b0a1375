#include "tokenizer/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>  // defines: pcre2_compile, pcre2_match, pcre2_jit_*

#include <cctype>  // defines: std::isalpha
#include <cstdio>  // defines: std::sscanf
#include <map>     // defines: std::map
#include <mutex>   // defines: std::mutex

#include "common/error.h"
#include "tokenizer/unicode.h"

namespace retort::tokenizer {

using nlohmann::json;

const char* const kQwen2SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The GPT-2 pattern that ByteLevel(use_regex=true) applies.
static const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// ---------------------------------------------------------------------------------------
// Regex

namespace {

struct MatchState {
  pcre2_match_data* data = nullptr;
  pcre2_match_context* ctx = nullptr;
  pcre2_jit_stack* stack = nullptr;
  MatchState() {
    data = pcre2_match_data_create(4, nullptr);
    ctx = pcre2_match_context_create(nullptr);
    stack = pcre2_jit_stack_create(32 * 1024, 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(ctx, nullptr, stack);
  }
  ~MatchState() {
    pcre2_match_data_free(data);
    pcre2_match_context_free(ctx);
    pcre2_jit_stack_free(stack);
  }
};

// One per thread: match data and JIT stack are not shareable across threads.
MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

// "14.0" from PCRE2's "14.0.0": the Unicode version of the regex engine's own tables.
std::string pcre2_unicode_version() {
  char buf[64] = {0};
  if (pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, buf) <= 0) return "0.0";
  std::string v(buf);
  size_t dot = v.find('.');
  size_t second = dot == std::string::npos ? std::string::npos : v.find('.', dot + 1);
  return second == std::string::npos ? v : v.substr(0, second);
}

bool version_less(const std::string& a, const std::string& b) {
  auto parts = [](const std::string& v) {
    int major = 0, minor = 0;
    std::sscanf(v.c_str(), "%d.%d", &major, &minor);
    return std::make_pair(major, minor);
  };
  return parts(a) < parts(b);
}

// ICU's code points of `property` assigned after PCRE2's Unicode version, as class items;
// computed once per property and process.
const std::string& additions(const std::string& property) {
  static std::mutex mu;
  static std::map<std::string, std::string> cache;
  static const std::string engine = pcre2_unicode_version();
  static const bool newer = version_less(engine, unicode::icu_unicode_version());
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(property);
  if (it == cache.end())
    it = cache.emplace(property, newer ? unicode::property_additions_since(property, engine) : std::string()).first;
  return it->second;
}

bool is_property_name(const std::string& name) {
  if (name.empty()) return false;
  for (char c : name)
    if (!std::isalpha(static_cast<unsigned char>(c)) && c != '_') return false;
  return true;
}

}  // namespace

// PCRE2's Unicode tables lag behind those of Hugging Face tokenizers (PCRE2 10.42 has Unicode
// 14; a Unicode 15 letter such as U+1E4D0 is unassigned there). The pattern is rewritten so
// that its classes follow ICU's newer tables:
//   \p{X}  gains the code points ICU gives property X that were assigned after PCRE2's version
//          (PCRE2 keeps its fast table lookup for the rest: "[\p{L}\x{1E4D0}-\x{1E4EB}...]");
//   \s     becomes Oniguruma's and Rust's whitespace, [\t-\r\x{85}\p{Z}] (PCRE2's \s also takes
//          U+180E, which left White_Space in Unicode 6.3), and \S outside a class its complement;
//   \d     becomes \p{Nd} (with its additions).
// Negated properties (\P{X}, \p{^X}) and \S inside a class keep PCRE2's own tables.
std::string current_unicode_pattern(const std::string& pattern) {
  const std::string space_items = "\\t-\\r\\x{85}\\p{Z}" + additions("Z");
  std::string out;
  out.reserve(pattern.size());
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      char n = pattern[i + 1];
      auto emit = [&](const std::string& items) { out += in_class ? items : "[" + items + "]"; };
      if (n == 'p') {
        size_t end = i + 2;
        std::string name;
        if (end < pattern.size() && pattern[end] == '{') {
          size_t close = pattern.find('}', end);
          if (close == std::string::npos) {
            out.append(pattern, i, std::string::npos);  // PCRE2 reports the error
            break;
          }
          name = pattern.substr(end + 1, close - end - 1);
          end = close;
        } else if (end < pattern.size()) {
          name = std::string(1, pattern[end]);
        }
        std::string native = pattern.substr(i, end - i + 1);
        const std::string& extra = is_property_name(name) ? additions(name) : std::string();
        if (extra.empty()) out += native;
        else emit(native + extra);
        i = end;
        continue;
      }
      if (n == 's') {
        emit(space_items);
        ++i;
        continue;
      }
      if (n == 'S' && !in_class) {
        out += "[^" + space_items + "]";
        ++i;
        continue;
      }
      if (n == 'd') {
        emit("\\p{Nd}" + additions("Nd"));
        ++i;
        continue;
      }
      out += c;
      out += n;
      ++i;
      continue;
    }
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {  // [:alpha:]
      size_t close = pattern.find(":]", i + 2);
      size_t end = close == std::string::npos ? pattern.size() : close + 2;
      out.append(pattern, i, end - i);
      i = end - 1;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];  // a literal ']' first
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

Regex::Regex(const std::string& pattern, const std::string& where) : pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE off = 0;
  const std::string compiled = current_unicode_pattern(pattern);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
  if (!code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw Error(ErrorInfo{"the split pattern does not compile", where, "a regular expression PCRE2 accepts",
                          quote_for_error(pattern) + " (at offset " + std::to_string(off) + ": " +
                              reinterpret_cast<char*>(msg) + ")",
                          "check the pattern in tokenizer.json"});
  }
  jit_ = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  code_ = code;
}

Regex::~Regex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void Regex::find_all(std::string_view subject, std::vector<std::pair<size_t, size_t>>& out) const {
  out.clear();
  auto* code = static_cast<pcre2_code*>(code_);
  MatchState& st = match_state();
  auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  size_t pos = 0;
  // The text was validated as UTF-8 once (or repaired) before splitting, so every call
  // skips PCRE2's own check.
  while (pos <= subject.size()) {
    int rc = jit_ ? pcre2_jit_match(code, s, subject.size(), pos, PCRE2_NO_UTF_CHECK, st.data, st.ctx)
                  : pcre2_match(code, s, subject.size(), pos, PCRE2_NO_UTF_CHECK, st.data, st.ctx);
    if (rc < 0) {
      if (rc == PCRE2_ERROR_NOMATCH) break;
      throw Error(ErrorInfo{"regular expression matching failed", "tokenizer pre-tokenizer", "a match or no match",
                            "PCRE2 error " + std::to_string(rc), "the text may be too long for the JIT stack"});
    }
    PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
    size_t start = ov[0], end = ov[1];
    out.emplace_back(start, end);
    if (end > start) {
      pos = end;
    } else {
      // Empty match: step over one whole UTF-8 character.
      if (end >= subject.size()) break;
      size_t i = end;
      unicode::next_code_point(subject, i);
      pos = i;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Normalizers

namespace {

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(std::string form) : form_(std::move(form)) {}
  std::string normalize(std::string_view text) const override { return unicode::normalize(text, form_); }
  json to_json() const override { return {{"type", form_}}; }

 private:
  std::string form_;
};

class SequenceNormalizer : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> parts;
  std::string normalize(std::string_view text) const override {
    std::string s(text);
    for (const auto& p : parts) s = p->normalize(s);
    return s;
  }
  json to_json() const override {
    json arr = json::array();
    for (const auto& p : parts) arr.push_back(p->to_json());
    return {{"type", "Sequence"}, {"normalizers", arr}};
  }
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  std::string type = j.value("type", "");
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") return std::make_unique<UnicodeNormalizer>(type);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceNormalizer>();
    if (!j.contains("normalizers") || !j["normalizers"].is_array())
      throw Error(ErrorInfo{"a Sequence normalizer needs a 'normalizers' array", where, "an array", "none", ""});
    for (const auto& sub : j["normalizers"]) {
      auto n = make_normalizer(sub, where);
      if (n) seq->parts.push_back(std::move(n));
    }
    return seq;
  }
  throw Error(ErrorInfo{"unsupported normalizer type", where + ": normalizer", "NFC, NFD, NFKC, NFKD, Sequence or null",
                        quote_for_error(type), "retort reads byte-level BPE tokenizers (GPT-2, Qwen, DeepSeek, Llama 3)"});
}

// ---------------------------------------------------------------------------------------
// Pre-tokenizers

namespace {

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

Behavior parse_behavior(const std::string& s, const std::string& where) {
  if (s == "Removed") return Behavior::Removed;
  if (s == "Isolated") return Behavior::Isolated;
  if (s == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (s == "MergedWithNext") return Behavior::MergedWithNext;
  if (s == "Contiguous") return Behavior::Contiguous;
  throw Error(ErrorInfo{"unknown split behavior", where, "Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous",
                        quote_for_error(s), ""});
}

const char* behavior_name(Behavior b) {
  switch (b) {
    case Behavior::Removed: return "Removed";
    case Behavior::Isolated: return "Isolated";
    case Behavior::MergedWithPrevious: return "MergedWithPrevious";
    case Behavior::MergedWithNext: return "MergedWithNext";
    case Behavior::Contiguous: return "Contiguous";
  }
  return "Isolated";
}

// Splits one piece given (offsets, is_match) spans that cover it, following the
// Hugging Face semantics of each behavior; empty results are dropped.
void apply_behavior(std::string_view piece, const std::vector<std::pair<std::pair<size_t, size_t>, bool>>& spans,
                    Behavior behavior, std::vector<std::string_view>& out) {
  auto sub = [&](size_t a, size_t b) { return piece.substr(a, b - a); };
  switch (behavior) {
    case Behavior::Isolated:
      for (const auto& s : spans) out.push_back(sub(s.first.first, s.first.second));
      break;
    case Behavior::Removed:
      for (const auto& s : spans)
        if (!s.second) out.push_back(sub(s.first.first, s.first.second));
      break;
    case Behavior::Contiguous:
    case Behavior::MergedWithPrevious: {
      // Contiguous: a span joins the previous one when both are matches or both are not.
      // MergedWithPrevious: a match joins the previous span unless that was a match too.
      std::vector<std::pair<size_t, size_t>> acc;
      bool previous_match = false;
      for (const auto& s : spans) {
        bool join = behavior == Behavior::Contiguous ? s.second == previous_match : (s.second && !previous_match);
        if (join && !acc.empty()) acc.back().second = s.first.second;
        else acc.push_back(s.first);
        previous_match = s.second;
      }
      for (const auto& a : acc) out.push_back(sub(a.first, a.second));
      break;
    }
    case Behavior::MergedWithNext: {
      // A match joins the next span unless that one is a match too (walked right to left).
      std::vector<std::pair<size_t, size_t>> acc;
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->second && !previous_match && !acc.empty()) acc.back().first = it->first.first;
        else acc.push_back(it->first);
        previous_match = it->second;
      }
      for (auto it = acc.rbegin(); it != acc.rend(); ++it) out.push_back(sub(it->first, it->second));
      break;
    }
  }
}

// Turns match offsets into spans covering the whole piece.
void to_spans(std::string_view piece, const std::vector<std::pair<size_t, size_t>>& matches, bool invert,
              std::vector<std::pair<std::pair<size_t, size_t>, bool>>& spans) {
  spans.clear();
  size_t prev = 0;
  for (const auto& m : matches) {
    if (prev != m.first) spans.push_back({{prev, m.first}, invert});
    spans.push_back({{m.first, m.second}, !invert});
    prev = m.second;
  }
  if (prev != piece.size()) spans.push_back({{prev, piece.size()}, invert});
}

void drop_empty(std::vector<std::string_view>& v) {
  size_t w = 0;
  for (size_t r = 0; r < v.size(); ++r)
    if (!v[r].empty()) v[w++] = v[r];
  v.resize(w);
}

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(json pattern_json, const std::string& regex, Behavior behavior, bool invert, const std::string& where)
      : pattern_json_(std::move(pattern_json)), regex_(regex, where), behavior_(behavior), invert_(invert) {}

  void split(Pieces& pieces) const override {
    std::vector<std::string_view> out;
    out.reserve(pieces.items.size() * 4);
    std::vector<std::pair<size_t, size_t>> matches;
    std::vector<std::pair<std::pair<size_t, size_t>, bool>> spans;
    for (std::string_view piece : pieces.items) {
      regex_.find_all(piece, matches);
      to_spans(piece, matches, invert_, spans);
      apply_behavior(piece, spans, behavior_, out);
    }
    drop_empty(out);
    pieces.items.swap(out);
  }

  json to_json() const override {
    return {{"type", "Split"}, {"pattern", pattern_json_}, {"behavior", behavior_name(behavior_)}, {"invert", invert_}};
  }

 private:
  json pattern_json_;
  Regex regex_;
  Behavior behavior_;
  bool invert_;
};

// Escapes a literal for PCRE2 (Split with {"String": ...}).
std::string regex_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string("\\^$.|?*+()[]{}").find(c) != std::string::npos) out += '\\';
    out += c;
  }
  return out;
}

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool trim_offsets, bool use_regex)
      : add_prefix_space_(add_prefix_space), trim_offsets_(trim_offsets), use_regex_(use_regex) {
    if (use_regex_) regex_ = std::make_unique<Regex>(kGpt2Pattern, "ByteLevel pre-tokenizer");
  }

  // The byte-to-alphabet mapping itself happens in the BPE model (it is a pure
  // per-byte map); here only the prefix space and the GPT-2 split apply.
  void split(Pieces& pieces) const override {
    if (add_prefix_space_) {
      for (auto& piece : pieces.items) {
        if (!piece.empty() && piece.front() == ' ') continue;
        pieces.arena.push_back(" " + std::string(piece));
        piece = pieces.arena.back();
      }
    }
    if (!use_regex_) return;
    std::vector<std::string_view> out;
    std::vector<std::pair<size_t, size_t>> matches;
    std::vector<std::pair<std::pair<size_t, size_t>, bool>> spans;
    for (std::string_view piece : pieces.items) {
      regex_->find_all(piece, matches);
      to_spans(piece, matches, false, spans);
      apply_behavior(piece, spans, Behavior::Isolated, out);
    }
    drop_empty(out);
    pieces.items.swap(out);
  }

  json to_json() const override {
    return {{"type", "ByteLevel"}, {"add_prefix_space", add_prefix_space_}, {"trim_offsets", trim_offsets_}, {"use_regex", use_regex_}};
  }
  bool byte_level() const override { return true; }

 private:
  bool add_prefix_space_, trim_offsets_, use_regex_;
  std::unique_ptr<Regex> regex_;
};

class DigitsPreTokenizer : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual) : individual_(individual) {}
  void split(Pieces& pieces) const override {
    std::vector<std::string_view> out;
    std::vector<std::pair<std::pair<size_t, size_t>, bool>> spans;
    for (std::string_view piece : pieces.items) {
      // Spans of single characters, numeric or not, then the behavior merges them.
      spans.clear();
      size_t i = 0;
      size_t run_start = 0;
      bool run_numeric = false;
      bool in_run = false;
      while (i < piece.size()) {
        size_t start = i;
        bool num = unicode::is_numeric(unicode::next_code_point(piece, i));
        if (num) {
          if (in_run && !run_numeric) spans.push_back({{run_start, start}, false}), in_run = false;
          spans.push_back({{start, i}, true});
        } else {
          if (!in_run) run_start = start, in_run = true, run_numeric = false;
        }
      }
      if (in_run) spans.push_back({{run_start, piece.size()}, false});
      apply_behavior(piece, spans, individual_ ? Behavior::Isolated : Behavior::Contiguous, out);
    }
    drop_empty(out);
    pieces.items.swap(out);
  }
  json to_json() const override { return {{"type", "Digits"}, {"individual_digits", individual_}}; }

 private:
  bool individual_;
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> parts;
  void split(Pieces& pieces) const override {
    for (const auto& p : parts) p->split(pieces);
  }
  json to_json() const override {
    json arr = json::array();
    for (const auto& p : parts) arr.push_back(p->to_json());
    return {{"type", "Sequence"}, {"pretokenizers", arr}};
  }
  bool byte_level() const override {
    for (const auto& p : parts)
      if (p->byte_level()) return true;
    return false;
  }
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  std::string type = j.value("type", "");
  std::string here = where + ": pre_tokenizer " + type;
  if (type == "Split") {
    const json& pat = j.at("pattern");
    std::string regex;
    if (pat.contains("Regex")) regex = pat["Regex"].get<std::string>();
    else if (pat.contains("String")) regex = regex_escape(pat["String"].get<std::string>());
    else throw Error(ErrorInfo{"a Split pattern needs 'Regex' or 'String'", here, "{\"Regex\": ...}", pat.dump(), ""});
    return std::make_unique<SplitPreTokenizer>(pat, regex, parse_behavior(j.value("behavior", "Isolated"), here),
                                               j.value("invert", false), here);
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(j.value("add_prefix_space", false), j.value("trim_offsets", true),
                                                   j.value("use_regex", true));
  }
  if (type == "Digits") return std::make_unique<DigitsPreTokenizer>(j.value("individual_digits", false));
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePreTokenizer>();
    if (!j.contains("pretokenizers") || !j["pretokenizers"].is_array())
      throw Error(ErrorInfo{"a Sequence pre-tokenizer needs a 'pretokenizers' array", here, "an array", "none", ""});
    for (const auto& sub : j["pretokenizers"]) {
      auto p = make_pre_tokenizer(sub, where);
      if (p) seq->parts.push_back(std::move(p));
    }
    return seq;
  }
  throw Error(ErrorInfo{"unsupported pre-tokenizer type", where + ": pre_tokenizer", "Split, ByteLevel, Digits or Sequence",
                        quote_for_error(type), "retort reads byte-level BPE tokenizers (GPT-2, Qwen, DeepSeek, Llama 3)"});
}

}  // namespace retort::tokenizer
