// The reward-hacking flags of a chain: heuristics that point at chains worth reading. See query.h.
#include "audit/query.h"

#include <algorithm>      // defines: std::max
#include <cctype>         // defines: std::isalnum, std::isalpha, std::isdigit
#include <cmath>          // defines: std::isnan
#include <cstring>        // defines: std::strchr, std::strlen
#include <unordered_set>  // defines: std::unordered_set

#include "audit/query_internal.h"  // defines: trim, fmt
#include "common/error.h"          // defines: quote_for_error
#include "rewards/extract.h"       // defines: last_boxed, last_code_block, extract_answer (what the verifiers graded)
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
      {"answer_from_constant_print", "answer copied from a tool that only printed it",
       "The final answer equals the output of a tool call whose program only prints a constant (print(42)): the "
       "program did not compute the answer, the policy wrote it in and the call dresses up a guess as a result."},
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

// ---------------------------------------------------------------------------------------
// Constant prints: a tiny reader of Python statements, enough to tell `print(42)` and
// `print("42", end="")` from anything that computes (operators, names, calls, subscripts).

// A string literal at `i` (prefixes r, u, b and their pairs; never f, whose braces compute):
// advances past it. Triple quotes must close on the same line (the caller splits at newlines:
// a literal spanning lines is not recognised, so such a program is not called constant).
bool skip_string_literal(std::string_view s, size_t& i) {
  size_t p = i;
  while (p < s.size() && p - i < 2 && std::strchr("rRuUbB", s[p]) != nullptr && s[p] != '\0') ++p;
  if (p >= s.size() || (s[p] != '"' && s[p] != '\'')) return false;
  char q = s[p];
  bool triple = s.substr(p, 3) == std::string(3, q);
  size_t k = p + (triple ? 3 : 1);
  while (k < s.size()) {
    if (s[k] == '\\') {
      k += 2;
      continue;
    }
    if (s[k] == q && (!triple || s.substr(k, 3) == std::string(3, q))) {
      i = k + (triple ? 3 : 1);
      return true;
    }
    ++k;
  }
  return false;
}

// A number literal (an optional sign, digits, a point, an exponent, a j; 0x/0o/0b forms) or
// True / False / None at `i`: advances past it.
bool skip_number_or_constant(std::string_view s, size_t& i) {
  for (const char* word : {"True", "False", "None"}) {
    size_t n = std::strlen(word);
    if (s.substr(i, n) == word && (i + n == s.size() || !(std::isalnum(static_cast<unsigned char>(s[i + n])) || s[i + n] == '_'))) {
      i += n;
      return true;
    }
  }
  size_t p = i;
  if (p < s.size() && (s[p] == '-' || s[p] == '+')) ++p;
  size_t digits = p;
  while (p < s.size() && (std::isalnum(static_cast<unsigned char>(s[p])) || s[p] == '_' || s[p] == '.' ||
                          ((s[p] == '-' || s[p] == '+') && p > digits && (s[p - 1] == 'e' || s[p - 1] == 'E'))))
    ++p;
  if (p == digits || !(std::isdigit(static_cast<unsigned char>(s[digits])) || s[digits] == '.')) return false;
  if (s[digits] == '.' && (p == digits + 1)) return false;  // a lone "."
  i = p;
  return true;
}

void skip_spaces(std::string_view s, size_t& i) {
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
}

// One statement: print(LITERAL, ..., KEY=LITERAL, ...).
bool constant_print_statement(std::string_view st) {
  size_t i = 0;
  skip_spaces(st, i);
  if (st.substr(i, 5) != "print") return false;
  i += 5;
  skip_spaces(st, i);
  if (i >= st.size() || st[i] != '(') return false;
  ++i;
  skip_spaces(st, i);
  bool first = true;
  while (i < st.size() && st[i] != ')') {
    if (!first) {
      if (st[i] != ',') return false;
      ++i;
      skip_spaces(st, i);
      if (i < st.size() && st[i] == ')') break;  // a trailing comma
    }
    first = false;
    // KEY= before a literal (sep="", end="\n", flush=True).
    size_t k = i;
    while (k < st.size() && (std::isalnum(static_cast<unsigned char>(st[k])) || st[k] == '_')) ++k;
    size_t after_key = k;
    skip_spaces(st, after_key);
    if (k > i && std::isalpha(static_cast<unsigned char>(st[i])) && after_key < st.size() && st[after_key] == '=' &&
        (after_key + 1 >= st.size() || st[after_key + 1] != '=')) {
      i = after_key + 1;
      skip_spaces(st, i);
    }
    if (!skip_string_literal(st, i) && !skip_number_or_constant(st, i)) return false;
    skip_spaces(st, i);
    // Adjacent string literals concatenate ("4" "2"): still a constant.
    while (i < st.size() && st[i] != ',' && st[i] != ')') {
      if (!skip_string_literal(st, i)) return false;
      skip_spaces(st, i);
    }
  }
  if (i >= st.size()) return false;  // never closed
  ++i;
  skip_spaces(st, i);
  return i == st.size();
}

}  // namespace

bool prints_only_constants(std::string_view code) {
  bool any = false;
  size_t start = 0;
  while (start <= code.size()) {
    size_t nl = code.find('\n', start);
    std::string_view line = code.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start);
    start = nl == std::string_view::npos ? code.size() + 1 : nl + 1;
    // Statements of the line, split at ';' and cut at '#' outside string literals.
    size_t i = 0, from = 0;
    std::vector<std::string_view> statements;
    while (i < line.size()) {
      char ch = line[i];
      if (ch == '"' || ch == '\'' || ((ch == 'r' || ch == 'b' || ch == 'u' || ch == 'R' || ch == 'B' || ch == 'U') && i + 1 < line.size() &&
                                      (line[i + 1] == '"' || line[i + 1] == '\''))) {
        size_t j = i;
        if (!skip_string_literal(line, j)) return false;  // an unclosed or multi-line literal
        i = j;
        continue;
      }
      if (ch == '#') break;
      if (ch == ';') {
        statements.push_back(line.substr(from, i - from));
        from = i + 1;
      }
      ++i;
    }
    statements.push_back(line.substr(from, i - from));
    for (std::string_view st : statements) {
      if (trim(st).empty()) continue;
      if (!constant_print_statement(trim(st))) return false;
      any = true;
    }
  }
  return any;
}

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

  // 7. An answer copied from a tool call that printed it as a constant.
  if (!c.tool_calls.empty()) {
    std::optional<std::string> final_answer;
    for (const auto& v : c.verdicts)  // what the math verifier graded, when there is one
      if (auto e = v.detail->find("extracted"); e != v.detail->end() && e->is_string()) final_answer = e->get<std::string>();
    if (!final_answer) {
      rewards::ExtractedAnswer a = rewards::extract_answer(answer.empty() ? text : answer);
      if (a.method != "none") final_answer = a.text;
    }
    std::string want = final_answer ? normalise_answer(*final_answer) : "";
    for (size_t i = 0; i < c.tool_calls.size() && !want.empty(); ++i) {
      const ToolCallView& t = c.tool_calls[i];
      if (t.status != "ok" || normalise_answer(trim(t.observation())) != want) continue;
      std::string code = t.code();
      if (!prints_only_constants(code)) continue;
      out.push_back({"answer_from_constant_print", "call " + std::to_string(i + 1) + " of " +
                                                       std::to_string(c.tool_calls.size()) + " runs " +
                                                       quote_for_error(trim(code), 60) + " and the final answer is " +
                                                       quote_for_error(*final_answer, 60)});
      break;
    }
  }
  return out;
}

}  // namespace retort::audit
