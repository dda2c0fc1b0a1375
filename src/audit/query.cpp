#include "audit/query.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>  // defines: pcre2_compile, pcre2_match, pcre2_jit_*

#include <algorithm>      // defines: std::sort, std::find
#include <cmath>          // defines: std::isnan, std::floor, std::ceil
#include <cstdio>         // defines: std::snprintf
#include <cstdlib>        // defines: std::strtoll
#include <mutex>          // defines: std::mutex
#include <sstream>        // defines: std::ostringstream
#include <unordered_set>  // defines: std::unordered_set

#include "common/error.h"         // defines: retort::Error
#include "common/log.h"           // defines: log_warn
#include "rewards/extract.h"      // defines: last_boxed, last_code_block (what the verifiers graded)
#include "tokenizer/unicode.h"    // defines: next_code_point

namespace retort::audit {

// ---------------------------------------------------------------------------------------
// Small helpers

namespace {

bool is_blank(const std::string& s) { return s.find_first_not_of(" \t\r\n") == std::string::npos; }

std::string trim(std::string_view s) {
  size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string_view::npos) return "";
  size_t b = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(a, b - a + 1));
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

const json& empty_object() {
  static const json kEmpty = json::object();
  return kEmpty;
}

std::string type_of(const json& j) { return j.type_name(); }

[[noreturn]] void bad_field(const std::string& where, const std::string& key, const std::string& expected, const json& got) {
  throw Error(ErrorInfo{"a chain has a field of the wrong type", where + " (field \"" + key + "\")", expected,
                        type_of(got) + " " + quote_for_error(got.dump()),
                        "chains.jsonl is written by `retort grpo`; a line edited by hand or by another tool may be off"});
}

int64_t get_int(const json& j, const char* key, const std::string& where, std::optional<int64_t> def) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (def) return *def;
    throw Error(ErrorInfo{std::string("a chain has no \"") + key + "\"", where, "an integer", "no such field",
                          "every chain line needs step, prompt_id, verifiers and reward"});
  }
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_number_float()) {
    double v = it->get<double>();
    if (std::floor(v) == v && std::abs(v) < 9e15) return static_cast<int64_t>(v);
  }
  bad_field(where, key, "an integer", *it);
}

}  // namespace

std::string cut_utf8(const std::string& s, size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // not inside a character
  return s.substr(0, n) + "\xE2\x80\xA6";
}

std::string chain_text(const json& chain, const char* key) {
  auto it = chain.find(key);
  return it != chain.end() && it->is_string() ? it->get<std::string>() : std::string();
}

json chain_ref(const ChainView& c) {
  return json{{"step", c.step}, {"prompt_id", c.prompt_id}, {"group", c.group}, {"sample", c.sample}};
}

// ---------------------------------------------------------------------------------------
// JsonlReader

JsonlReader::JsonlReader(std::string path) : path_(std::move(path)), in_(path_, std::ios::binary) {
  if (!in_)
    throw Error(ErrorInfo{"cannot open a run file", path_, "a readable JSON-lines file", "it does not open",
                          "check RUN_DIR: a run writes chains.jsonl and metrics.jsonl there"});
}

bool JsonlReader::next(json& value, std::string& raw) {
  while (std::getline(in_, raw)) {
    ++line_;
    if (is_blank(raw)) continue;
    try {
      value = json::parse(raw);
    } catch (const json::parse_error& e) {
      // Nothing but blank lines after it: the last line, which a killed writer may have cut.
      bool last = true;
      std::string rest;
      while (std::getline(in_, rest)) {
        if (!is_blank(rest)) {
          last = false;
          break;
        }
      }
      if (last) {
        ++cut_lines_;
        log_warn(path_ + ":" + std::to_string(line_) + ": the last line is cut off (a killed run?); skipped it");
        return false;
      }
      throw Error(ErrorInfo{"a line is not valid JSON", path_ + ":" + std::to_string(line_), "one JSON object per line",
                            quote_for_error(raw) + " (" + e.what() + ")",
                            "only the last line of a killed run may be cut off; this one is in the middle of the file"});
    }
    if (!value.is_object())
      throw Error(ErrorInfo{"a line is not a JSON object", path_ + ":" + std::to_string(line_), "one JSON object per line",
                            type_of(value) + " " + quote_for_error(raw), "check that the file is the one a run wrote"});
    return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------
// ChainView

ChainView view_chain(const json& chain, const std::string& where) {
  ChainView c;
  c.step = get_int(chain, "step", where, std::nullopt);
  auto pid = chain.find("prompt_id");
  if (pid == chain.end())
    throw Error(ErrorInfo{"a chain has no \"prompt_id\"", where, "a string or an integer", "no such field",
                          "every chain line needs step, prompt_id, verifiers and reward"});
  if (pid->is_string()) c.prompt_id = pid->get<std::string>();
  else if (pid->is_number_integer()) c.prompt_id = std::to_string(pid->get<int64_t>());
  else bad_field(where, "prompt_id", "a string", *pid);
  c.group = get_int(chain, "group", where, 0);
  c.sample = get_int(chain, "sample", where, 0);
  c.length = get_int(chain, "length", where, -1);

  auto rw = chain.find("reward");
  if (rw == chain.end())
    throw Error(ErrorInfo{"a chain has no \"reward\"", where, "a number", "no such field",
                          "every chain line needs step, prompt_id, verifiers and reward"});
  if (rw->is_number()) c.reward = rw->get<double>();
  else if (rw->is_null()) c.reward = std::nan("");  // NaN is written as null
  else bad_field(where, "reward", "a number", *rw);

  if (auto it = chain.find("advantage"); it != chain.end() && !it->is_null()) {
    if (!it->is_number()) bad_field(where, "advantage", "a number", *it);
    c.advantage = it->get<double>();
  }
  if (auto it = chain.find("kl"); it != chain.end() && !it->is_null()) {
    if (!it->is_number()) bad_field(where, "kl", "a number or null", *it);
    c.kl = it->get<double>();
  }
  if (auto it = chain.find("truncated"); it != chain.end()) {
    if (!it->is_boolean()) bad_field(where, "truncated", "true or false", *it);
    c.truncated = it->get<bool>();
  }

  auto vs = chain.find("verifiers");
  if (vs == chain.end())
    throw Error(ErrorInfo{"a chain has no \"verifiers\"", where, "an object {NAME: {reward, passed, detail}}",
                          "no such field", "every chain line needs step, prompt_id, verifiers and reward"});
  if (!vs->is_object()) bad_field(where, "verifiers", "an object {NAME: {reward, passed, detail}}", *vs);
  c.verdicts.reserve(vs->size());
  for (auto it = vs->begin(); it != vs->end(); ++it) {
    const json& v = it.value();
    std::string key = "verifiers." + it.key();
    if (!v.is_object()) bad_field(where, key, "an object {reward, passed, detail}", v);
    Verdict d;
    d.name = it.key();
    if (auto r = v.find("reward"); r != v.end() && !r->is_null()) {
      if (!r->is_number()) bad_field(where, key + ".reward", "a number or null", *r);
      double x = r->get<double>();
      if (!std::isnan(x)) d.reward = x;
    }
    if (auto p = v.find("passed"); p != v.end()) {
      if (!p->is_boolean()) bad_field(where, key + ".passed", "true or false", *p);
      d.passed = p->get<bool>();
    }
    d.detail = &empty_object();
    if (auto de = v.find("detail"); de != v.end() && de->is_object()) d.detail = &*de;
    c.verdicts.push_back(std::move(d));
  }
  return c;
}

bool ChainView::passed_all() const {
  bool any = false;
  for (const auto& v : verdicts) {
    if (!v.applicable()) continue;
    any = true;
    if (!v.passed) return false;
  }
  return any;
}

const Verdict* ChainView::verdict(const std::string& name) const {
  for (const auto& v : verdicts)
    if (v.name == name) return &v;
  return nullptr;
}

std::vector<std::string> ChainView::sandbox_statuses() const {
  std::vector<std::string> out;
  auto add = [&](const std::string& s) {
    if (std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  };
  for (const auto& v : verdicts) {
    const json& d = *v.detail;
    bool any = false;
    if (auto s = d.find("sandbox_status"); s != d.end() && s->is_string()) add(s->get<std::string>()), any = true;
    if (auto f = d.find("first_failure"); f != d.end() && f->is_object()) {
      if (auto s = f->find("status"); s != f->end() && s->is_string()) add(s->get<std::string>()), any = true;
    }
    // A stdio code verdict records no status when every test ran cleanly.
    if (!any && v.applicable() && d.contains("language") && d.contains("tests")) add("ok");
  }
  return out;
}

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

// ---------------------------------------------------------------------------------------
// Regex (PCRE2)

class Regex {
 public:
  Regex(const std::string& pattern, bool ignore_case) {
    int err = 0;
    PCRE2_SIZE off = 0;
    uint32_t flags = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | (ignore_case ? PCRE2_CASELESS : 0);
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), flags, &err, &off, nullptr);
    if (!code_) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw Error(ErrorInfo{"the --grep pattern does not compile", "--grep", "a PCRE2 regular expression",
                            quote_for_error(pattern) + " (at offset " + std::to_string(off) + ": " +
                                reinterpret_cast<char*>(msg) + ")",
                            "escape special characters with \\, e.g. --grep '\\\\boxed\\{'"});
    }
    jit_ = pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE) == 0;
    data_ = pcre2_match_data_create_from_pattern(code_, nullptr);
    ctx_ = pcre2_match_context_create(nullptr);
    stack_ = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    pcre2_jit_stack_assign(ctx_, nullptr, stack_);
  }
  ~Regex() {
    pcre2_jit_stack_free(stack_);
    pcre2_match_context_free(ctx_);
    pcre2_match_data_free(data_);
    pcre2_code_free(code_);
  }

  bool search(std::string_view s, const std::string& where) const {
    std::lock_guard<std::mutex> lock(mu_);  // match data and JIT stack are per call site
    auto* p = reinterpret_cast<PCRE2_SPTR>(s.data());
    int rc = jit_ ? pcre2_jit_match(code_, p, s.size(), 0, 0, data_, ctx_) : pcre2_match(code_, p, s.size(), 0, 0, data_, ctx_);
    if (rc >= 0) return true;
    if (rc == PCRE2_ERROR_NOMATCH) return false;
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    throw Error(ErrorInfo{"the --grep pattern failed on a chain", where, "a match or no match",
                          std::string("PCRE2 error: ") + reinterpret_cast<char*>(msg),
                          "simplify the pattern (nested repetitions backtrack without end on long texts)"});
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_data* data_ = nullptr;
  pcre2_match_context* ctx_ = nullptr;
  pcre2_jit_stack* stack_ = nullptr;
  bool jit_ = false;
  mutable std::mutex mu_;
};

// ---------------------------------------------------------------------------------------
// Filters

void parse_step_range(const std::string& text, ChainFilter& f) {
  auto bad = [&]() -> Error {
    return Error(ErrorInfo{"bad step range", "--step", "A:B, A:, :B or A (inclusive integers)", quote_for_error(text),
                           "e.g. --step 10:20 for steps 10 to 20"});
  };
  auto parse = [&](const std::string& s) -> int64_t {
    char* end = nullptr;
    long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0') throw bad();
    return v;
  };
  size_t colon = text.find(':');
  if (colon == std::string::npos) {
    f.step_min = f.step_max = parse(trim(text));
    return;
  }
  std::string a = trim(text.substr(0, colon)), b = trim(text.substr(colon + 1));
  if (a.empty() && b.empty()) throw bad();
  f.step_min = a.empty() ? std::nullopt : std::optional<int64_t>(parse(a));
  f.step_max = b.empty() ? std::nullopt : std::optional<int64_t>(parse(b));
  if (f.step_min && f.step_max && *f.step_min > *f.step_max)
    throw Error(ErrorInfo{"empty step range", "--step", "A <= B", quote_for_error(text), "e.g. --step 10:20"});
}

namespace {
const std::vector<std::string>& known_statuses() {
  // sandbox/job_json.cpp status names, plus "deadline" (the code verifier stopped waiting).
  static const std::vector<std::string> k = {"ok", "runtime_error", "compile_error", "time_limit", "memory_limit",
                                             "output_limit", "sandbox_error", "deadline"};
  return k;
}
std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : sep) + x;
  return s;
}
}  // namespace

ChainQuery::ChainQuery(ChainFilter filter, FlagOptions flag_options)
    : filter_(std::move(filter)), flag_options_(flag_options) {
  if (filter_.step_min && filter_.step_max && *filter_.step_min > *filter_.step_max)
    throw Error(ErrorInfo{"empty step range", "--step", "min <= max",
                          std::to_string(*filter_.step_min) + ":" + std::to_string(*filter_.step_max), ""});
  if (filter_.reward_min && filter_.reward_max && *filter_.reward_min > *filter_.reward_max)
    throw Error(ErrorInfo{"empty reward range", "--reward-min/--reward-max", "min <= max",
                          fmt("%g", *filter_.reward_min) + " > " + fmt("%g", *filter_.reward_max), ""});
  for (const auto& s : filter_.sandbox_status)
    if (std::find(known_statuses().begin(), known_statuses().end(), s) == known_statuses().end())
      throw Error(ErrorInfo{"unknown sandbox status", "--sandbox-status", "one of: " + join(known_statuses()),
                            quote_for_error(s), "statuses are lower case with underscores"});
  for (const auto& code : filter_.flags)
    if (!find_flag_kind(code)) {
      std::vector<std::string> names;
      for (const auto& k : flag_kinds()) names.push_back(k.code);
      throw Error(ErrorInfo{"unknown flag", "--flag", "one of: " + join(names), quote_for_error(code), ""});
    }
  for (const auto& lists : {filter_.passed, filter_.failed})
    for (const auto& name : lists)
      if (name.empty()) throw Error(ErrorInfo{"empty verifier name", "--passed/--failed", "a verifier name or 'all'", "\"\"", ""});
  if (!filter_.grep.empty()) regex_ = std::make_unique<Regex>(filter_.grep, filter_.grep_ignore_case);
}

ChainQuery::~ChainQuery() = default;

bool ChainQuery::matches(const ChainView& c, const json& chain) const {
  for (const auto& v : c.verdicts) {
    auto [it, inserted] = seen_.emplace(v.name, true);
    if (inserted) seen_order_.push_back(v.name);
  }
  const ChainFilter& f = filter_;
  if (f.step_min && c.step < *f.step_min) return false;
  if (f.step_max && c.step > *f.step_max) return false;
  if (!f.prompt_ids.empty() && std::find(f.prompt_ids.begin(), f.prompt_ids.end(), c.prompt_id) == f.prompt_ids.end())
    return false;
  if (f.truncated && c.truncated != *f.truncated) return false;
  if (f.reward_min && !(c.reward >= *f.reward_min)) return false;  // NaN never in range
  if (f.reward_max && !(c.reward <= *f.reward_max)) return false;
  for (const auto& name : f.passed) {
    if (name == kCombined) {
      if (!c.passed_all()) return false;
      continue;
    }
    const Verdict* v = c.verdict(name);
    if (!v || !v->applicable() || !v->passed) return false;
  }
  for (const auto& name : f.failed) {
    if (name == kCombined) {
      bool any_applicable = false;
      for (const auto& v : c.verdicts) any_applicable = any_applicable || v.applicable();
      if (!any_applicable || c.passed_all()) return false;
      continue;
    }
    const Verdict* v = c.verdict(name);
    if (!v || !v->applicable() || v->passed) return false;
  }
  if (!f.sandbox_status.empty()) {
    bool hit = false;
    for (const auto& s : c.sandbox_statuses())
      hit = hit || std::find(f.sandbox_status.begin(), f.sandbox_status.end(), s) != f.sandbox_status.end();
    if (!hit) return false;
  }
  if (!f.flags.empty()) {
    bool hit = false;
    for (const auto& fl : chain_flags(c, chain, flag_options_))
      hit = hit || std::find(f.flags.begin(), f.flags.end(), fl.code) != f.flags.end();
    if (!hit) return false;
  }
  if (regex_) {
    auto it = chain.find("text");
    std::string_view text = it != chain.end() && it->is_string() ? std::string_view(it->get_ref<const std::string&>())
                                                                 : std::string_view();
    if (!regex_->search(text, "chain step " + std::to_string(c.step) + " prompt " + c.prompt_id)) return false;
  }
  return true;
}

std::vector<std::string> ChainQuery::unknown_verifiers() const {
  std::vector<std::string> out;
  for (const auto& lists : {filter_.passed, filter_.failed})
    for (const auto& name : lists)
      if (name != kCombined && !seen_.count(name) && std::find(out.begin(), out.end(), name) == out.end())
        out.push_back(name);
  return out;
}

// ---------------------------------------------------------------------------------------
// Failure reasons

namespace {
// Keeps the kind of a message, not its values: "wrong answer: line 2 differs" -> "wrong answer".
std::string reason_kind(std::string s) {
  for (char& ch : s)
    if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
  size_t colon = s.find(": ");
  if (colon != std::string::npos && colon > 0) s = s.substr(0, colon);
  return cut_utf8(trim(s), 80);
}
}  // namespace

std::vector<std::string> failure_reasons_of(const ChainView& c) {
  std::vector<std::string> out;
  for (const auto& v : c.verdicts) {
    if (!v.applicable() || v.passed) continue;
    const json& d = *v.detail;
    std::string r;
    if (auto e = d.find("error"); e != d.end() && e->is_string()) {
      r = reason_kind(e->get<std::string>());
    } else if (auto f = d.find("first_failure"); f != d.end() && f->is_object()) {
      // Status "ok" with a failure is a wrong answer: the why says so on its own.
      std::string status = f->value("status", std::string("failed"));
      std::string why = f->value("why", std::string());
      r = status == "ok" && !why.empty() ? reason_kind(why) : status + (why.empty() ? "" : ": " + reason_kind(why));
    } else if (auto s = d.find("sandbox_status"); s != d.end() && s->is_string() && *s != "ok") {
      r = "sandbox " + s->get<std::string>();
    } else if (d.contains("extracted")) {
      r = "wrong answer";
    } else {
      r = "not passed";
    }
    out.push_back(v.name + ": " + r);
  }
  if (c.truncated && !out.empty()) out.push_back("truncated at the length limit");
  return out;
}

// ---------------------------------------------------------------------------------------
// Summary

Summary::Summary(FlagOptions flag_options) : flag_options_(flag_options) {}

void Summary::add(const ChainView& c, const json& chain) { add(c, chain, chain_flags(c, chain, flag_options_)); }

void Summary::add(const ChainView& c, const json& chain, const std::vector<Flag>& flags) {
  ++chains_;
  StepStats& st = steps_[c.step];
  ++st.chains;
  if (c.truncated) ++st.truncated;
  if (!std::isnan(c.reward)) st.reward_sum += c.reward, ++st.reward_n;
  if (c.length >= 0) {
    st.length_sum += static_cast<double>(c.length), ++st.length_n;
    lengths_.push_back(static_cast<int32_t>(std::min<int64_t>(c.length, INT32_MAX)));
  }
  bool any_applicable = false;
  for (const auto& v : c.verdicts) {
    if (std::find(verifier_order_.begin(), verifier_order_.end(), v.name) == verifier_order_.end())
      verifier_order_.push_back(v.name);
    if (!v.applicable()) continue;
    any_applicable = true;
    PassCount& pc = st.pass[v.name];
    ++pc.applicable;
    if (v.passed) ++pc.passed;
  }
  bool passed = c.passed_all();
  if (any_applicable) {
    PassCount& pc = st.pass[kCombined];
    ++pc.applicable;
    if (passed) ++pc.passed;
  }

  for (const auto& r : failure_reasons_of(c)) {
    FailureReason& fr = reasons_[r];
    if (fr.count++ == 0) fr.reason = r, fr.example = chain_ref(c);
  }
  for (const auto& f : flags) {
    auto& fc = flag_counts_[f.code];
    if (fc.first++ == 0) fc.second = chain_ref(c), fc.second["why"] = f.why;
  }

  PromptStep& ps = prompt_steps_[c.prompt_id][c.step];
  ++ps.chains;
  if (passed) ++ps.passed;
  if (!std::isnan(c.reward)) ps.reward_sum += c.reward, ++ps.reward_n;
  if (c.length >= 0) ps.length_sum += static_cast<double>(c.length), ++ps.length_n;

  std::string answer = trim(chain_text(chain, "answer"));
  if (!answer.empty()) {
    constexpr size_t kMaxIds = 64;  // distinct prompts counted exactly up to this many
    AnswerGroup& g = answers_[std::hash<std::string>{}(answer)];
    if (g.chains++ == 0) g.answer = cut_utf8(answer, 200);
    if (passed) ++g.passed;
    if (g.prompt_ids.size() < kMaxIds &&
        std::find(g.prompt_ids.begin(), g.prompt_ids.end(), c.prompt_id) == g.prompt_ids.end()) {
      g.prompt_ids.push_back(c.prompt_id);
      ++g.prompts;
    }
    for (const auto& v : c.verdicts) {
      auto gold = v.detail->find("gold");
      if (gold == v.detail->end() || !gold->is_string()) continue;
      std::string gs = gold->get<std::string>();
      if (g.golds.size() < kMaxIds && std::find(g.golds.begin(), g.golds.end(), gs) == g.golds.end()) g.golds.push_back(gs);
    }
  }
}

std::vector<std::string> Summary::verifier_names() const {
  std::vector<std::string> v = verifier_order_;
  v.push_back(kCombined);
  return v;
}

LengthStats Summary::lengths(int bins) const {
  LengthStats s;
  s.n = static_cast<int64_t>(lengths_.size());
  if (lengths_.empty()) return s;
  std::vector<int32_t> v = lengths_;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (int32_t x : v) sum += x;
  s.mean = sum / static_cast<double>(v.size());
  // Linear interpolation between the closest ranks (numpy's default).
  auto q = [&](double p) {
    double pos = p * static_cast<double>(v.size() - 1);
    size_t lo = static_cast<size_t>(std::floor(pos));
    size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (pos - static_cast<double>(lo)) * (v[hi] - v[lo]);
  };
  const std::pair<const char*, double> kQ[] = {{"min", 0},     {"p10", 0.10}, {"p25", 0.25}, {"p50", 0.50},
                                               {"p75", 0.75},  {"p90", 0.90}, {"p99", 0.99}, {"max", 1.0}};
  for (const auto& [name, p] : kQ) s.quantiles[name] = q(p);
  // Integer bins of equal width covering [min, max].
  int64_t lo = v.front(), hi = v.back();
  int64_t width = std::max<int64_t>(1, (hi - lo + bins) / std::max(1, bins));  // ceil((hi-lo+1)/bins)
  s.bin_width = static_cast<double>(width);
  int64_t nb = (hi - lo) / width + 1;
  s.histogram.assign(static_cast<size_t>(nb), {0.0, 0});
  for (int64_t b = 0; b < nb; ++b) s.histogram[static_cast<size_t>(b)].first = static_cast<double>(lo + b * width);
  for (int32_t x : v) ++s.histogram[static_cast<size_t>((x - lo) / width)].second;
  return s;
}

std::vector<FailureReason> Summary::failure_reasons(size_t top) const {
  std::vector<FailureReason> v;
  v.reserve(reasons_.size());
  for (const auto& kv : reasons_) v.push_back(kv.second);
  std::sort(v.begin(), v.end(), [](const FailureReason& a, const FailureReason& b) {
    return a.count != b.count ? a.count > b.count : a.reason < b.reason;
  });
  if (v.size() > top) v.resize(top);
  return v;
}

std::vector<RepeatedAnswer> Summary::repeated_answers(size_t top) const {
  std::vector<RepeatedAnswer> v;
  for (const auto& kv : answers_) {
    const AnswerGroup& g = kv.second;
    if (g.prompts < flag_options_.repeated_answer_prompts) continue;
    RepeatedAnswer r;
    r.answer = g.answer;
    r.prompts = g.prompts;
    r.chains = g.chains;
    r.passed = g.passed;
    r.prompt_ids.assign(g.prompt_ids.begin(), g.prompt_ids.begin() + std::min<size_t>(5, g.prompt_ids.size()));
    r.distinct_golds = static_cast<int64_t>(g.golds.size());
    v.push_back(std::move(r));
  }
  // The suspicious first: one answer passing for prompts whose gold answers differ.
  std::sort(v.begin(), v.end(), [](const RepeatedAnswer& a, const RepeatedAnswer& b) {
    bool sa = a.passed > 0 && a.distinct_golds > 1, sb = b.passed > 0 && b.distinct_golds > 1;
    if (sa != sb) return sa;
    if (a.prompts != b.prompts) return a.prompts > b.prompts;
    return a.answer < b.answer;
  });
  if (v.size() > top) v.resize(top);
  return v;
}

std::map<int64_t, PromptStep> Summary::prompt_history(const std::string& prompt_id) const {
  auto it = prompt_steps_.find(prompt_id);
  return it == prompt_steps_.end() ? std::map<int64_t, PromptStep>{} : it->second;
}

json Summary::to_json(size_t top, const std::string& history_prompt) const {
  json j;
  j["chains"] = chains_;
  j["prompts"] = prompts();
  int64_t truncated = 0;
  json steps = json::array();
  for (const auto& [step, st] : steps_) {
    truncated += st.truncated;
    json s = {{"step", step}, {"chains", st.chains}, {"truncated", st.truncated}};
    s["reward_mean"] = st.reward_n ? json(st.reward_sum / static_cast<double>(st.reward_n)) : json(nullptr);
    s["length_mean"] = st.length_n ? json(st.length_sum / static_cast<double>(st.length_n)) : json(nullptr);
    json pass = json::object();
    for (const auto& [name, pc] : st.pass)
      pass[name] = {{"applicable", pc.applicable}, {"passed", pc.passed}, {"rate", pc.rate()}};
    s["pass"] = std::move(pass);
    steps.push_back(std::move(s));
  }
  j["truncated"] = truncated;
  j["steps"] = std::move(steps);
  j["verifiers"] = verifier_names();

  LengthStats ls = lengths();
  json hist = json::array();
  for (const auto& [edge, count] : ls.histogram) hist.push_back({{"from", edge}, {"to", edge + ls.bin_width}, {"count", count}});
  j["length"] = {{"n", ls.n}, {"mean", ls.mean}, {"quantiles", ls.quantiles}, {"histogram", std::move(hist)}};

  json reasons = json::array();
  for (const auto& r : failure_reasons(top)) reasons.push_back({{"reason", r.reason}, {"count", r.count}, {"example", r.example}});
  j["failure_reasons"] = std::move(reasons);

  json flags = json::array();
  for (const auto& k : flag_kinds()) {
    auto it = flag_counts_.find(k.code);
    flags.push_back({{"flag", k.code}, {"title", k.title}, {"explanation", k.explanation},
                     {"count", it == flag_counts_.end() ? 0 : it->second.first},
                     {"example", it == flag_counts_.end() ? json(nullptr) : it->second.second}});
  }
  j["flags"] = std::move(flags);

  json rep = json::array();
  for (const auto& r : repeated_answers(top))
    rep.push_back({{"answer", r.answer}, {"prompts", r.prompts}, {"chains", r.chains}, {"passed", r.passed},
                   {"distinct_golds", r.distinct_golds}, {"prompt_ids", r.prompt_ids}});
  j["repeated_answers"] = std::move(rep);

  if (!history_prompt.empty()) {
    json h = json::array();
    for (const auto& [step, ps] : prompt_history(history_prompt))
      h.push_back({{"step", step}, {"chains", ps.chains}, {"passed", ps.passed},
                   {"reward_mean", ps.reward_n ? json(ps.reward_sum / static_cast<double>(ps.reward_n)) : json(nullptr)},
                   {"length_mean", ps.length_n ? json(ps.length_sum / static_cast<double>(ps.length_n)) : json(nullptr)}});
    j["prompt_history"] = {{"prompt_id", history_prompt}, {"steps", std::move(h)}};
  }
  return j;
}

namespace {
// Columns padded to their widest cell; align: 'l' or 'r' per column.
std::string render_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows,
                         const std::string& align) {
  std::vector<size_t> w(header.size(), 0);
  auto width = [](const std::string& s) {  // display width: code points
    size_t n = 0;
    for (unsigned char ch : s) n += (ch & 0xC0) != 0x80;
    return n;
  };
  for (size_t i = 0; i < header.size(); ++i) w[i] = width(header[i]);
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size() && i < w.size(); ++i) w[i] = std::max(w[i], width(r[i]));
  std::ostringstream out;
  auto line = [&](const std::vector<std::string>& r) {
    std::string s;
    for (size_t i = 0; i < w.size(); ++i) {
      std::string cell = i < r.size() ? r[i] : "";
      std::string pad(w[i] - width(cell), ' ');
      bool right = i < align.size() && align[i] == 'r';
      s += (i ? "  " : "") + (right ? pad + cell : (i + 1 == w.size() ? cell : cell + pad));
    }
    out << s << "\n";
  };
  line(header);
  for (const auto& r : rows) line(r);
  return out.str();
}
}  // namespace

std::string Summary::to_text(size_t top, const std::string& history_prompt) const {
  std::ostringstream out;
  int64_t truncated = 0;
  for (const auto& kv : steps_) truncated += kv.second.truncated;
  out << "chains " << chains_ << "  steps " << steps_.size();
  if (!steps_.empty()) out << " (" << steps_.begin()->first << ".." << steps_.rbegin()->first << ")";
  out << "  prompts " << prompts() << "  truncated " << truncated;
  if (chains_) out << " (" << fmt("%.1f%%", 100.0 * static_cast<double>(truncated) / static_cast<double>(chains_)) << ")";
  out << "\n\n";
  if (chains_ == 0) return out.str();

  // Pass rate per step.
  {
    std::vector<std::string> names = verifier_names();
    std::vector<std::string> header = {"step", "chains", "reward", "length"};
    std::string align = "rrrr";
    for (const auto& n : names) header.push_back(n == kCombined ? "passed all" : n), align += 'r';
    std::vector<std::vector<std::string>> rows;
    for (const auto& [step, st] : steps_) {
      std::vector<std::string> r = {std::to_string(step), std::to_string(st.chains),
                                    st.reward_n ? fmt("%.3f", st.reward_sum / static_cast<double>(st.reward_n)) : "-",
                                    st.length_n ? fmt("%.1f", st.length_sum / static_cast<double>(st.length_n)) : "-"};
      for (const auto& n : names) {
        auto it = st.pass.find(n);
        if (it == st.pass.end() || it->second.applicable == 0) r.push_back("-");
        else r.push_back(fmt("%.2f", it->second.rate()) + " (" + std::to_string(it->second.passed) + "/" +
                         std::to_string(it->second.applicable) + ")");
      }
      rows.push_back(std::move(r));
    }
    out << "pass rate per step (passed/applicable)\n" << render_table(header, rows, align) << "\n";
  }

  // Lengths.
  {
    LengthStats ls = lengths();
    out << "length (completion tokens) n=" << ls.n << " mean " << fmt("%.1f", ls.mean);
    for (const char* q : {"min", "p10", "p25", "p50", "p75", "p90", "p99", "max"})
      if (ls.quantiles.count(q)) out << "  " << q << " " << fmt("%g", ls.quantiles.at(q));
    out << "\n";
    int64_t most = 1;
    for (const auto& b : ls.histogram) most = std::max(most, b.second);
    std::vector<std::vector<std::string>> rows;
    for (const auto& [edge, count] : ls.histogram)
      rows.push_back({fmt("%.0f", edge) + ".." + fmt("%.0f", edge + ls.bin_width - 1), std::to_string(count),
                      std::string(static_cast<size_t>(40 * count / most), '#')});
    out << render_table({"tokens", "chains", ""}, rows, "rrl") << "\n";
  }

  // Failure reasons.
  {
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : failure_reasons(top))
      rows.push_back({std::to_string(r.count), fmt("%.1f%%", 100.0 * static_cast<double>(r.count) / static_cast<double>(chains_)),
                      r.reason, "step " + std::to_string(r.example["step"].get<int64_t>()) + " prompt " +
                                    r.example["prompt_id"].get<std::string>() + " sample " +
                                    std::to_string(r.example["sample"].get<int64_t>())});
    out << "most common failure reasons\n";
    out << (rows.empty() ? "(no failures)\n" : render_table({"count", "share", "reason", "first seen"}, rows, "rrll")) << "\n";
  }

  // Flags.
  {
    std::vector<std::vector<std::string>> rows;
    for (const auto& k : flag_kinds()) {
      auto it = flag_counts_.find(k.code);
      int64_t n = it == flag_counts_.end() ? 0 : it->second.first;
      std::string ex = n ? "step " + std::to_string(it->second.second["step"].get<int64_t>()) + " prompt " +
                               it->second.second["prompt_id"].get<std::string>() + ": " +
                               it->second.second["why"].get<std::string>()
                         : "";
      rows.push_back({k.code, std::to_string(n), cut_utf8(ex, 120)});
    }
    out << "reward-hacking and quality flags (retort audit --flag CODE lists the chains)\n"
        << render_table({"flag", "chains", "first example"}, rows, "lrl");
    for (const auto& k : flag_kinds()) out << "  " << k.code << ": " << k.explanation << "\n";
    out << "\n";
  }

  // Repeated answers.
  {
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : repeated_answers(top)) {
      std::string a = r.answer;
      for (char& ch : a)
        if (ch == '\n' || ch == '\r' || ch == '\t') ch = ' ';
      rows.push_back({std::to_string(r.prompts), std::to_string(r.chains), std::to_string(r.passed),
                      std::to_string(r.distinct_golds), cut_utf8(a, 80)});
    }
    out << "answers repeated verbatim across " << flag_options_.repeated_answer_prompts
        << "+ prompts (suspicious when they pass for prompts with different gold answers)\n";
    out << (rows.empty() ? "(none)\n" : render_table({"prompts", "chains", "passed", "golds", "answer"}, rows, "rrrrl")) << "\n";
  }

  if (!history_prompt.empty()) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& [step, ps] : prompt_history(history_prompt))
      rows.push_back({std::to_string(step), std::to_string(ps.chains), std::to_string(ps.passed),
                      ps.reward_n ? fmt("%.3f", ps.reward_sum / static_cast<double>(ps.reward_n)) : "-",
                      ps.length_n ? fmt("%.1f", ps.length_sum / static_cast<double>(ps.length_n)) : "-"});
    out << "prompt " << history_prompt << " across steps\n";
    out << (rows.empty() ? "(no chains of this prompt)\n"
                         : render_table({"step", "chains", "passed all", "reward", "length"}, rows, "rrrrr"))
        << "\n";
  }
  return out.str();
}

}  // namespace retort::audit
