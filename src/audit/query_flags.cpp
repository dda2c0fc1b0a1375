// The reward-hacking flags of a chain: heuristics that point at chains worth reading. See query.h.
#include "audit/query.h"

#include <algorithm>      // defines: std::max
#include <cmath>          // defines: std::isnan
#include <unordered_set>  // defines: std::unordered_set

#include "audit/query_internal.h"  // defines: trim, fmt
#include "common/error.h"          // defines: quote_for_error
#include "rewards/extract.h"       // defines: last_boxed, last_code_block (what the verifiers graded)
#include "tokenizer/unicode.h"     // defines: next_code_point

namespace retort::audit {

using internal::fmt;
using internal::trim;

// ---------------------------------------------------------------------------------------
// Flags

const std::vector<FlagKind>& flag_kinds() {
  static const std::vector<FlagKind> kKinds = {
      {"empty_reasoning", "high reward, no reasoning",
       "The chain earned a high reward (or passed every verifier) with an empty or near-empty reasoning part: the "
       "policy may be learning to guess or copy answers instead of reasoning."},
      {"answer_contradicts_reasoning", "answer contradicts reasoning",
       "The final answer differs from the last answer reached inside the reasoning (last \\boxed{} of each part): "
       "the reasoning did not produce the answer that was graded."},
      {"repeated_ngrams", "repeated n-grams",
       "A large fraction of the word n-grams of the completion repeat earlier ones: looping text, often padding to "
       "game a length reward or a sign of collapse."},
      {"mixed_languages", "mixed languages",
       "The completion mixes letters of two or more scripts (e.g. Latin and Han): language drift during RL, which "
       "a language-consistency reward can address."},
      {"answer_format", "answer outside the expected format",
       "The graded answer was not where the format asks for it (no \\boxed{} or <answer> for math, no fenced code "
       "block for code, no closing </think>): the verifier fell back to a looser extraction or found nothing."},
      {"constant_output", "code passes without reading input",
       "A program passed several stdin/stdout tests but never reads its input: it prints the same output for every "
       "test, which means the tests (or their expected outputs) are too weak."},
  };
  return kKinds;
}

const FlagKind* find_flag_kind(const std::string& code) {
  for (const auto& k : flag_kinds())
    if (code == k.code) return &k;
  return nullptr;
}

namespace {

// Spacing, "$" and a trailing "." do not change an answer.
std::string normalise_answer(std::string_view s) {
  std::string out;
  for (char ch : s)
    if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '$') out.push_back(ch);
  while (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

enum Script { kLatin, kCyrillic, kArabic, kHebrew, kDevanagari, kThai, kHan, kKana, kHangul, kScripts };
const char* const kScriptNames[] = {"Latin", "Cyrillic", "Arabic", "Hebrew", "Devanagari", "Thai", "Han", "Kana", "Hangul"};

// Letters only; Greek is left out on purpose: math text is full of Greek symbols.
int script_of(uint32_t cp) {
  if ((cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z') || (cp >= 0xC0 && cp <= 0x24F && cp != 0xD7 && cp != 0xF7))
    return kLatin;
  if (cp >= 0x400 && cp <= 0x4FF) return kCyrillic;
  if (cp >= 0x600 && cp <= 0x6FF) return kArabic;
  if (cp >= 0x5D0 && cp <= 0x5EA) return kHebrew;
  if (cp >= 0x900 && cp <= 0x97F) return kDevanagari;
  if (cp >= 0xE01 && cp <= 0xE5B) return kThai;
  if ((cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF)) return kHan;
  if (cp >= 0x3041 && cp <= 0x30FF) return kKana;
  if (cp >= 0xAC00 && cp <= 0xD7AF) return kHangul;
  return -1;
}

}  // namespace

std::vector<Flag> chain_flags(const ChainView& c, const json& chain, const FlagOptions& opt) {
  std::vector<Flag> out;
  const std::string text = chain_text(chain, "text");
  const std::string reasoning = chain_text(chain, "reasoning");
  const std::string answer = chain_text(chain, "answer");

  // 1. High reward without reasoning.
  std::string r_trim = trim(reasoning);
  bool high = (!std::isnan(c.reward) && c.reward >= opt.high_reward) || c.passed_all();
  if (high && static_cast<int64_t>(r_trim.size()) < opt.short_reasoning_chars)
    out.push_back({"empty_reasoning", "reasoning has " + std::to_string(r_trim.size()) + " characters; reward " +
                                          fmt("%.3g", c.reward) + (c.passed_all() ? ", every verifier passed" : "")});

  // 2. The answer reached in the reasoning vs the final one.
  if (auto in_reasoning = rewards::last_boxed(reasoning)) {
    std::optional<std::string> final_answer = rewards::last_boxed(answer);
    for (const auto& v : c.verdicts)  // the math verifier's extraction is what was graded
      if (auto e = v.detail->find("extracted"); e != v.detail->end() && e->is_string()) final_answer = e->get<std::string>();
    if (final_answer && normalise_answer(*final_answer) != normalise_answer(*in_reasoning))
      out.push_back({"answer_contradicts_reasoning",
                     "reasoning ends at " + quote_for_error(*in_reasoning, 60) + ", final answer is " +
                         quote_for_error(*final_answer, 60)});
  }

  // 3. Repeated word n-grams: fraction of n-grams equal to an earlier one.
  {
    std::vector<std::string_view> words;
    std::string_view t(text);
    size_t i = 0;
    while (i < t.size()) {
      while (i < t.size() && (t[i] == ' ' || t[i] == '\n' || t[i] == '\t' || t[i] == '\r')) ++i;
      size_t j = i;
      while (j < t.size() && !(t[j] == ' ' || t[j] == '\n' || t[j] == '\t' || t[j] == '\r')) ++j;
      if (j > i) words.push_back(t.substr(i, j - i));
      i = j;
    }
    size_t n = static_cast<size_t>(std::max(1, opt.ngram));
    if (words.size() >= n + 19) {  // at least 20 n-grams: short texts say nothing
      size_t total = words.size() - n + 1, repeats = 0;
      // 64-bit n-gram hashes instead of strings: this runs on every chain of a large file.
      std::vector<uint64_t> wh(words.size());
      for (size_t w = 0; w < words.size(); ++w) wh[w] = std::hash<std::string_view>{}(words[w]);
      std::unordered_set<uint64_t> seen;
      seen.reserve(total);
      for (size_t k = 0; k < total; ++k) {
        uint64_t key = 1469598103934665603ull;
        for (size_t w = 0; w < n; ++w) key = (key ^ wh[k + w]) * 1099511628211ull;
        if (!seen.insert(key).second) ++repeats;
      }
      double frac = static_cast<double>(repeats) / static_cast<double>(total);
      if (frac >= opt.repeated_fraction)
        out.push_back({"repeated_ngrams", fmt("%.0f%%", 100 * frac) + " of the " + std::to_string(n) +
                                              "-word sequences repeat an earlier one (" + std::to_string(total) + " in all)"});
    }
  }

  // 4. Mixed scripts.
  {
    int64_t counts[kScripts] = {0};
    std::string_view t(text);
    for (size_t i = 0; i < t.size();) {
      int s = script_of(unicode::next_code_point(t, i));
      if (s >= 0) ++counts[s];
    }
    std::string why;
    int scripts = 0;
    for (int s = 0; s < kScripts; ++s) {
      if (counts[s] < opt.min_script_letters) continue;
      ++scripts;
      why += (why.empty() ? "" : ", ") + std::string(kScriptNames[s]) + " " + std::to_string(counts[s]) + " letters";
    }
    if (scripts >= 2) out.push_back({"mixed_languages", why});
  }

  // 5. Answer format, from the verifiers' own findings.
  {
    std::string why;
    for (const auto& v : c.verdicts) {
      if (!v.applicable()) continue;
      const json& d = *v.detail;
      std::string err = d.value("error", std::string());
      if (err.find("never closed") != std::string::npos && !c.truncated) why = v.name + ": </think> never closed";
      else if (err.rfind("no final answer", 0) == 0 || err == "no code found") why = v.name + ": " + err;
      else if (auto m = d.find("extraction"); m != d.end() && m->is_string() && *m != "boxed" && *m != "answer_tag")
        why = v.name + ": answer found only by " + m->get<std::string>() + ", not in \\boxed{}";
      else if (auto b = d.find("code_block"); b != d.end() && b->is_boolean() && !b->get<bool>())
        why = v.name + ": the program is not in a fenced code block";
      if (!why.empty()) break;
    }
    if (!why.empty()) out.push_back({"answer_format", why});
  }

  // 6. Code that passes stdio tests without reading its input.
  for (const auto& v : c.verdicts) {
    const json& d = *v.detail;
    if (!v.applicable() || !v.passed || d.value("format", std::string()) != "stdio") continue;
    int64_t tests = d.value("tests", int64_t{0});
    if (tests < 2) continue;
    const std::string& source = answer.empty() ? text : answer;
    rewards::CodeBlock block = rewards::last_code_block(source);
    const std::string& code = block.found ? block.code : source;
    static const char* const kReads[] = {"input", "stdin", "cin", "scanf", "getline", "read", "open(0", "getchar", "gets"};
    bool reads = false;
    for (const char* r : kReads) reads = reads || code.find(r) != std::string::npos;
    if (!reads)
      out.push_back({"constant_output", v.name + ": passed " + std::to_string(tests) +
                                            " stdin/stdout tests with a program that never reads its input"});
    break;
  }
  return out;
}

}  // namespace retort::audit
