// Shape rewards: format, tag count, length, repetition (see shape.h).
#include "rewards/shape.h"

#include <cctype>         // defines: std::tolower, std::isspace
#include <cmath>          // defines: std::cos, M_PI
#include <unordered_set>  // defines: std::unordered_set

#include "common/error.h"    // defines: retort::Error
#include "rewards/extract.h" // defines: split_think, last_boxed

namespace retort::rewards {

namespace {

size_t count_of(std::string_view hay, std::string_view needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string_view::npos; p = hay.find(needle, p + needle.size())) ++n;
  return n;
}

bool blank(std::string_view s) {
  for (char c : s)
    if (!std::isspace(static_cast<unsigned char>(c))) return false;
  return true;
}

bool prompt_opens_think(std::string_view prompt) {
  size_t p = prompt.rfind("<think>");
  return p != std::string_view::npos && prompt.find("</think>", p) == std::string_view::npos;
}

int64_t measure(const LengthUnit& u, const Sample& s, json& detail) {
  if (u.unit == "chars") return static_cast<int64_t>(s.completion.size());
  if (u.unit == "words") {
    int64_t n = 0;
    bool in_word = false;
    for (char c : s.completion) {
      bool sp = std::isspace(static_cast<unsigned char>(c));
      if (!sp && !in_word) ++n;
      in_word = !sp;
    }
    return n;
  }
  if (s.completion_tokens >= 0) return s.completion_tokens;
  if (s.row.is_object()) {
    auto it = s.row.find("completion_tokens");
    if (it != s.row.end() && it->is_number_integer()) return it->get<int64_t>();
  }
  detail["error"] = "length unit is tokens but the sample carries no token count";
  return -1;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// format

void FormatOptions::bind(retort::ConfigBinder& b) {
  b.choice("mode", mode, {"strict", "soft"});
  b.field("require_boxed", require_boxed);
}

namespace {

class FormatVerifier : public Verifier {
 public:
  explicit FormatVerifier(const FormatOptions& o) : opt_(o) {}
  Score verify(const Sample& s) const override {
    Score out;
    std::string_view c = s.completion;
    bool opened_by_prompt = prompt_opens_think(s.prompt);
    size_t opens = count_of(c, "<think>"), closes = count_of(c, "</think>");
    ThinkSplit split = split_think(c, s.prompt);
    auto fail = [&](const char* why) {
      out.detail["error"] = why;
      return out;
    };
    if (closes == 0) return fail("no </think>");
    if (blank(split.answer)) return fail("nothing after </think>");
    if (opt_.mode == "strict") {
      if (closes != 1) return fail("</think> appears more than once");
      size_t expected_opens = opened_by_prompt ? 0 : 1;
      if (opens != expected_opens)
        return fail(opened_by_prompt ? "<think> repeated although the prompt opened it" : "not exactly one <think>");
      if (!opened_by_prompt) {
        // "<think>" first (after whitespace), followed by a newline.
        size_t first = c.find_first_not_of(" \t\r\n");
        if (first != c.find("<think>")) return fail("text before <think>");
        size_t after = c.find("<think>") + 7;
        if (after >= c.size() || c[after] != '\n') return fail("<think> not followed by a newline");
      }
      if (blank(split.reasoning)) return fail("empty reasoning");
      size_t close = c.find("</think>");
      if (close == 0 || c[close - 1] != '\n') return fail("</think> not on its own line");
      size_t after = close + 8;
      if (after < c.size() && c[after] != '\n') return fail("</think> not followed by a newline");
    } else if (opens > 1 || closes > 1) {
      return fail("think tags repeated");
    }
    if (opt_.require_boxed && !last_boxed(split.answer)) return fail("no \\boxed{} in the answer");
    out.reward = 1.0;
    out.passed = true;
    return out;
  }

 private:
  FormatOptions opt_;
};

}  // namespace

std::shared_ptr<Verifier> make_format_verifier(const FormatOptions& opt) { return std::make_shared<FormatVerifier>(opt); }

// ---------------------------------------------------------------------------------------
// tag_count

void TagCountOptions::bind(retort::ConfigBinder& b) { b.field("tags", tags); }

namespace {

class TagCountVerifier : public Verifier {
 public:
  explicit TagCountVerifier(const TagCountOptions& o) : opt_(o) {
    if (opt_.tags.empty())
      throw Error(ErrorInfo{"tag_count needs at least one tag", "rewards verifier 'tag_count': args.tags",
                            "a non-empty list such as [\"think\", \"answer\"]", "[]", ""});
  }
  Score verify(const Sample& s) const override {
    Score out;
    double credit = 1.0 / (2.0 * static_cast<double>(opt_.tags.size()));
    json counts = json::object();
    for (const auto& t : opt_.tags) {
      std::string open = "<" + t + ">", close = "</" + t + ">";
      size_t o = count_of(s.completion, open), c = count_of(s.completion, close);
      // An R1-Distill prompt opens the think block for the model.
      if (t == "think" && o == 0 && prompt_opens_think(s.prompt)) o = 1;
      if (o == 1) out.reward += credit;
      if (c == 1) out.reward += credit;
      counts[open] = o;
      counts[close] = c;
    }
    out.detail["counts"] = counts;
    out.passed = out.reward > 1.0 - 1e-9;
    return out;
  }

 private:
  TagCountOptions opt_;
};

}  // namespace

std::shared_ptr<Verifier> make_tag_count_verifier(const TagCountOptions& opt) {
  return std::make_shared<TagCountVerifier>(opt);
}

// ---------------------------------------------------------------------------------------
// overlong (DAPO)

void LengthUnit::bind(retort::ConfigBinder& b) { b.choice("unit", unit, {"tokens", "chars", "words"}); }

void OverlongOptions::bind(retort::ConfigBinder& b) {
  b.field("max_length", max_length);
  b.field("cache_length", cache_length);
  b.field("length", length);
}

// DAPO soft overlong punishment (Yu et al. 2025, "DAPO", eq. 13), |y| = length:
//   R(y) = 0                                   if |y| <= L_max - L_cache
//        = ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max
//        = -1                                  if L_max < |y|
double dapo_overlong_penalty(int64_t length, int64_t max_length, int64_t cache_length) {
  int64_t soft = max_length - cache_length;
  if (length <= soft) return 0.0;
  if (length <= max_length) return static_cast<double>(soft - length) / static_cast<double>(cache_length);
  return -1.0;
}

namespace {

void check_lengths(int64_t max_length, int64_t cache_length, const char* name) {
  if (max_length <= 0 || cache_length <= 0 || cache_length > max_length)
    throw Error(ErrorInfo{"bad length settings", std::string("rewards verifier '") + name + "': args",
                          "0 < cache_length <= max_length",
                          "max_length " + std::to_string(max_length) + ", cache_length " + std::to_string(cache_length),
                          "DAPO uses max_length 20480, cache_length 4096"});
}

class OverlongVerifier : public Verifier {
 public:
  explicit OverlongVerifier(const OverlongOptions& o) : opt_(o) { check_lengths(o.max_length, o.cache_length, "overlong"); }
  Score verify(const Sample& s) const override {
    Score out;
    int64_t len = measure(opt_.length, s, out.detail);
    if (len < 0) return Score::not_applicable(out.detail["error"].get<std::string>());
    out.reward = dapo_overlong_penalty(len, opt_.max_length, opt_.cache_length);
    out.passed = out.reward == 0.0;
    out.detail["length"] = len;
    out.detail["unit"] = opt_.length.unit;
    return out;
  }

 private:
  OverlongOptions opt_;
};

}  // namespace

std::shared_ptr<Verifier> make_overlong_verifier(const OverlongOptions& opt) {
  return std::make_shared<OverlongVerifier>(opt);
}

// ---------------------------------------------------------------------------------------
// cosine_length

void CosineLengthOptions::bind(retort::ConfigBinder& b) {
  b.field("max_length", max_length);
  b.field("correct_short", correct_short);
  b.field("correct_long", correct_long);
  b.field("wrong_short", wrong_short);
  b.field("wrong_long", wrong_long);
  b.field("exceed", exceed);
  b.field("length", length);
  b.field("math", math);
}

// Cosine length scaling (Yeo et al. 2025, "Demystifying Long Chain-of-Thought Reasoning in
// LLMs", eq. 1), progress = t / T in [0, 1]:
//   r(t) = r_T + (r_0 - r_T) * (1 + cos(pi * t / T)) / 2
// so r(0) = r_0 (= start) and r(T) = r_T (= end).
double cosine_scaled(double progress, double start, double end) {
  return end + 0.5 * (start - end) * (1.0 + std::cos(M_PI * progress));
}

namespace {

class CosineLengthVerifier : public Verifier {
 public:
  explicit CosineLengthVerifier(const CosineLengthOptions& o) : opt_(o), math_(make_math_verifier(o.math)) {
    if (o.max_length <= 0)
      throw Error(ErrorInfo{"bad max_length", "rewards verifier 'cosine_length': args.max_length", "a positive length",
                            std::to_string(o.max_length), ""});
  }
  Score verify(const Sample& s) const override {
    Score correctness = math_->verify(s);
    if (!correctness.applicable()) return correctness;
    Score out;
    int64_t len = measure(opt_.length, s, out.detail);
    if (len < 0) return Score::not_applicable(out.detail["error"].get<std::string>());
    out.detail["length"] = len;
    out.detail["correct"] = correctness.passed;
    out.detail["math"] = correctness.detail;
    if (len > opt_.max_length) {
      out.reward = opt_.exceed;
      return out;
    }
    double progress = static_cast<double>(len) / static_cast<double>(opt_.max_length);
    out.reward = correctness.passed ? cosine_scaled(progress, opt_.correct_short, opt_.correct_long)
                                    : cosine_scaled(progress, opt_.wrong_short, opt_.wrong_long);
    out.passed = correctness.passed;
    return out;
  }

 private:
  CosineLengthOptions opt_;
  std::shared_ptr<Verifier> math_;
};

}  // namespace

std::shared_ptr<Verifier> make_cosine_length_verifier(const CosineLengthOptions& opt) {
  return std::make_shared<CosineLengthVerifier>(opt);
}

// ---------------------------------------------------------------------------------------
// repetition

void RepetitionOptions::bind(retort::ConfigBinder& b) {
  b.field("ngram", ngram);
  b.field("max_penalty", max_penalty);
}

// N-gram repetition penalty (Yeo et al. 2025, section 4.3; as in open-r1's
// repetition_penalty_reward): with W the words and G the multiset of their n-grams,
//   fraction = 1 - |unique(G)| / |G|,   reward = fraction * max_penalty   (0 when |W| < n).
double ngram_repetition_fraction(std::string_view text, int n) {
  // Hash each word (lower-cased), then each window of n word hashes. Linear in the text.
  std::vector<uint64_t> words;
  uint64_t h = 1469598103934665603ull;
  bool in_word = false;
  for (char ch : text) {
    if (std::isspace(static_cast<unsigned char>(ch))) {
      if (in_word) words.push_back(h);
      in_word = false;
      h = 1469598103934665603ull;
    } else {
      in_word = true;
      h = (h ^ static_cast<unsigned char>(std::tolower(static_cast<unsigned char>(ch)))) * 1099511628211ull;
    }
  }
  if (in_word) words.push_back(h);
  if (n <= 0 || words.size() < static_cast<size_t>(n)) return 0.0;
  size_t total = words.size() - static_cast<size_t>(n) + 1;
  std::unordered_set<uint64_t> unique;
  unique.reserve(total * 2);
  for (size_t i = 0; i < total; ++i) {
    uint64_t g = 0xcbf29ce484222325ull;
    for (int k = 0; k < n; ++k) g = (g ^ words[i + static_cast<size_t>(k)]) * 0x100000001b3ull + static_cast<uint64_t>(k);
    unique.insert(g);
  }
  return 1.0 - static_cast<double>(unique.size()) / static_cast<double>(total);
}

namespace {

class RepetitionVerifier : public Verifier {
 public:
  explicit RepetitionVerifier(const RepetitionOptions& o) : opt_(o) {
    if (o.ngram < 1)
      throw Error(ErrorInfo{"bad ngram", "rewards verifier 'repetition': args.ngram", "an integer >= 1",
                            std::to_string(o.ngram), "3 is the usual choice"});
    if (o.max_penalty > 0)
      throw Error(ErrorInfo{"max_penalty must not be positive", "rewards verifier 'repetition': args.max_penalty",
                            "a value <= 0", std::to_string(o.max_penalty), "e.g. -1.0"});
  }
  Score verify(const Sample& s) const override {
    Score out;
    double frac = ngram_repetition_fraction(s.completion, opt_.ngram);
    out.reward = frac * opt_.max_penalty;
    out.passed = frac == 0.0;
    out.detail["repeated_fraction"] = frac;
    return out;
  }

 private:
  RepetitionOptions opt_;
};

}  // namespace

std::shared_ptr<Verifier> make_repetition_verifier(const RepetitionOptions& opt) {
  return std::make_shared<RepetitionVerifier>(opt);
}

}  // namespace retort::rewards
