// The code verifier (see code_verifier.h).
#include "rewards/code_verifier.h"

#include <chrono>         // defines: std::chrono::steady_clock
#include <cmath>          // defines: std::fabs
#include <cstdlib>        // defines: std::strtod
#include <deque>          // defines: std::deque
#include <future>         // defines: std::future, std::shared_future
#include <mutex>          // defines: std::mutex
#include <random>         // defines: std::random_device
#include <set>            // defines: std::set
#include <unordered_map>  // defines: std::unordered_map

#include "common/error.h"         // defines: retort::Error
#include "rewards/code_harness.h" // defines: assert_harness_source
#include "rewards/extract.h"      // defines: split_think, last_code_block

namespace retort::rewards {

void CodeVerifierOptions::bind(retort::ConfigBinder& b) {
  b.choice("language", language, {"python", "cpp", "auto"});
  b.choice("reward", reward, {"fraction", "all_or_nothing"});
  b.field("stop_at_first_failure", stop_at_first_failure);
  b.choice("grade", grade, {"answer", "completion"});
  b.field("float_tol", float_tol, retort::Range::at_least(0));
  b.field("max_tests", max_tests, retort::Range::at_least(0));
  b.field("call_timeout_s", call_timeout_s, retort::Range::above(0));
  b.field("deadline_s", deadline_s, retort::Range::above(0));
  b.field("detail_chars", detail_chars, retort::Range::at_least(0));
  b.field("cache", cache);
  b.field("limits", limits);
}

// ---------------------------------------------------------------------------------------
// Output comparison

namespace {

// Lines without their trailing whitespace (CR of CRLF included); blank lines before the first
// and after the last non-blank line are dropped, as LiveCodeBench, SandboxFusion and open-r1's
// code reward do (they strip the whole output). Blank lines in between still count.
std::vector<std::string_view> split_lines(std::string_view s) {
  std::vector<std::string_view> lines;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t e = s.find('\n', pos);
    if (e == std::string_view::npos) e = s.size();
    std::string_view l = s.substr(pos, e - pos);
    while (!l.empty() && (l.back() == '\r' || l.back() == ' ' || l.back() == '\t' || l.back() == '\f' || l.back() == '\v'))
      l.remove_suffix(1);
    lines.push_back(l);
    pos = e + 1;
  }
  auto blank = [](std::string_view l) { return l.find_first_not_of(" \t\r\f\v") == std::string_view::npos; };
  while (!lines.empty() && blank(lines.back())) lines.pop_back();
  size_t first = 0;
  while (first < lines.size() && blank(lines[first])) ++first;
  lines.erase(lines.begin(), lines.begin() + static_cast<std::ptrdiff_t>(first));
  return lines;
}

std::vector<std::string_view> split_tokens(std::string_view l) {
  std::vector<std::string_view> toks;
  size_t i = 0;
  while (i < l.size()) {
    while (i < l.size() && (l[i] == ' ' || l[i] == '\t' || l[i] == '\r' || l[i] == '\f' || l[i] == '\v')) ++i;
    size_t j = i;
    while (j < l.size() && !(l[j] == ' ' || l[j] == '\t' || l[j] == '\r' || l[j] == '\f' || l[j] == '\v')) ++j;
    if (j > i) toks.push_back(l.substr(i, j - i));
    i = j;
  }
  return toks;
}

bool is_integer_token(std::string_view t) {
  size_t i = (!t.empty() && (t[0] == '-' || t[0] == '+')) ? 1 : 0;
  if (i >= t.size()) return false;
  for (; i < t.size(); ++i)
    if (t[i] < '0' || t[i] > '9') return false;
  return true;
}

// The canonical text of an integer token: no '+', no leading zeros, "-0" is "0".
std::string_view integer_digits(std::string_view t, bool& negative) {
  negative = t[0] == '-';
  if (t[0] == '-' || t[0] == '+') t.remove_prefix(1);
  while (t.size() > 1 && t[0] == '0') t.remove_prefix(1);
  if (t == "0") negative = false;
  return t;
}

bool parse_double(std::string_view t, double& out) {
  // Decimal notation only: strtod would also read "inf", "nan" and hex floats ("0x10").
  if (t.empty() || t.size() > 64 || t.find_first_not_of("0123456789+-.eE") != std::string_view::npos) return false;
  std::string s(t);
  char* end = nullptr;
  out = std::strtod(s.c_str(), &end);
  return end == s.c_str() + s.size() && std::isfinite(out);
}

// The rule (rewards/README.md, "Code tests"): identical tokens match; an expected integer
// matches only an integer of the same value, digit for digit (`1000000007` never matches
// `1e9` or `1000000000.0`, whatever the tolerance); an expected non-integer number matches
// any number within |x - y| <= tol * max(1, |x|); anything else compares as text.
bool tokens_match(std::string_view e, std::string_view a, double tol) {
  if (e == a) return true;
  if (is_integer_token(e)) {
    if (!is_integer_token(a)) return false;
    bool ne = false, na = false;
    std::string_view de = integer_digits(e, ne), da = integer_digits(a, na);
    return ne == na && de == da;
  }
  double x, y;
  if (!parse_double(e, x) || !parse_double(a, y)) return false;
  return std::fabs(x - y) <= tol * std::max(1.0, std::fabs(x));
}

std::string quote(std::string_view s) { return "'" + truncate_for_detail(s, 60) + "'"; }

}  // namespace

OutputMatch compare_output(std::string_view expected, std::string_view actual, double float_tol) {
  auto el = split_lines(expected), al = split_lines(actual);
  size_t n = std::max(el.size(), al.size());
  for (size_t i = 0; i < n; ++i) {
    if (i >= al.size()) return {false, "missing line " + std::to_string(i + 1) + " (expected " + quote(el[i]) + ")"};
    if (i >= el.size()) return {false, "extra line " + std::to_string(i + 1) + ": " + quote(al[i])};
    auto et = split_tokens(el[i]), at = split_tokens(al[i]);
    size_t m = std::max(et.size(), at.size());
    for (size_t k = 0; k < m; ++k) {
      if (k >= at.size())
        return {false, "line " + std::to_string(i + 1) + ": missing token " + std::to_string(k + 1) + " " + quote(et[k])};
      if (k >= et.size())
        return {false, "line " + std::to_string(i + 1) + ": extra token " + quote(at[k])};
      if (!tokens_match(et[k], at[k], float_tol))
        return {false, "line " + std::to_string(i + 1) + ": expected " + quote(et[k]) + ", got " + quote(at[k])};
    }
  }
  return {true, ""};
}

// ---------------------------------------------------------------------------------------
// Tests of a row

namespace {

struct StdioTest {
  std::string input, output;
};

enum class TestFormat { None, Stdio, HumanEval, Mbpp };

struct RowTests {
  TestFormat format = TestFormat::None;
  std::vector<StdioTest> stdio;
  std::vector<std::string> asserts;  // one Python snippet per test
  std::string entry_point, prelude, test_defs, setup;
  std::string error;  // malformed tests: reported in the detail
};

std::string as_string(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "";
  return v.dump();
}

RowTests read_tests(const json& row) {
  RowTests t;
  if (!row.is_object()) return t;
  if (auto it = row.find("tests"); it != row.end() && !it->is_null()) {
    json tests = *it;
    if (tests.is_string()) {
      try {
        tests = json::parse(tests.get<std::string>());
      } catch (const std::exception& e) {
        t.format = TestFormat::Stdio;
        t.error = std::string("\"tests\" is a string that is not JSON: ") + e.what();
        return t;
      }
    }
    t.format = TestFormat::Stdio;
    if (tests.is_array()) {
      for (const auto& e : tests) {
        if (!e.is_object() || !e.contains("input") || !e.contains("output")) {
          t.error = "each test must be {\"input\", \"output\"}";
          return t;
        }
        t.stdio.push_back({as_string(e["input"]), as_string(e["output"])});
      }
    } else if (tests.is_object() && tests.contains("inputs") && tests.contains("outputs")) {
      const json &in = tests["inputs"], &out = tests["outputs"];
      if (!in.is_array() || !out.is_array() || in.size() != out.size()) {
        t.error = "\"inputs\" and \"outputs\" must be arrays of one length";
        return t;
      }
      for (size_t i = 0; i < in.size(); ++i) t.stdio.push_back({as_string(in[i]), as_string(out[i])});
    } else {
      t.error = "\"tests\" must be a list of {input, output} or {inputs, outputs}";
    }
    return t;
  }
  if (row.contains("test") && row.contains("entry_point") && row["test"].is_string()) {
    t.format = TestFormat::HumanEval;
    t.entry_point = as_string(row["entry_point"]);
    t.prelude = row.contains("prompt") ? as_string(row["prompt"]) : "";
    t.test_defs = as_string(row["test"]);
    t.asserts = {"check(candidate)"};
    return t;
  }
  if (auto it = row.find("test_list"); it != row.end() && it->is_array()) {
    t.format = TestFormat::Mbpp;
    for (const auto& a : *it) t.asserts.push_back(as_string(a));
    t.setup = row.contains("test_setup_code") ? as_string(row["test_setup_code"]) : "";
    return t;
  }
  return t;
}

const char* format_name(TestFormat f) {
  switch (f) {
    case TestFormat::Stdio: return "stdio";
    case TestFormat::HumanEval: return "humaneval";
    case TestFormat::Mbpp: return "mbpp";
    default: return "none";
  }
}

std::string make_nonce() {
  thread_local std::mt19937_64 rng{std::random_device{}() ^ (static_cast<uint64_t>(std::random_device{}()) << 32)};
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int w = 0; w < 2; ++w) {
    uint64_t v = rng();
    for (int k = 0; k < 16; ++k) s.push_back(hex[(v >> (4 * k)) & 15]);
  }
  return s;
}

// ---------------------------------------------------------------------------------------

// Results of the stdin/stdout jobs a verifier has submitted, by the job's whole content. At the
// demo's GRPO stage 61% of the code chains repeat a program an earlier chain wrote for the same
// prompt (39% within one step), and each sandbox job costs the machine a fork of the warm
// interpreter, its copy-on-write faults and its teardown: CPU that a 2-core machine's trainer
// ranks need. A job in flight is shared as well: a second sample with the same program waits
// for the first one's run. Results kept: at most kResultCacheBytes of keys and outputs, oldest
// dropped first; a sandbox error or an output over kMaxCachedOutput is not kept (run again).
class ResultCache {
 public:
  static constexpr size_t kResultCacheBytes = size_t{64} << 20;
  static constexpr size_t kMaxCachedOutput = size_t{64} << 10;

  static std::string key_of(const sandbox::Job& j) {
    const sandbox::Limits& l = j.limits;
    std::string k = j.language;
    for (double v : {l.wall_s, l.cpu_s}) k += '\0' + std::to_string(v);
    for (int64_t v : {l.memory_mb, l.output_kb, static_cast<int64_t>(l.max_processes), l.file_size_kb,
                      static_cast<int64_t>(l.open_files), l.workdir_kb})
      k += '\0' + std::to_string(v);
    k += '\0' + std::to_string(j.source.size()) + ':' + j.source + j.stdin_data;  // the length keeps source and input apart
    return k;
  }

  // The result of `job`: a finished or running job with the same content, else a new run.
  std::shared_future<sandbox::Result> submit(sandbox::Executor& ex, sandbox::Job job, std::string* key_out) {
    std::string key = key_of(job);
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      *key_out = std::move(key);
      return it->second.result;
    }
    std::shared_future<sandbox::Result> f = ex.submit(std::move(job)).share();
    entries_.emplace(key, Entry{f, key.size()});
    order_.push_back(key);
    bytes_ += key.size();
    evict();
    *key_out = std::move(key);
    return f;
  }

  // Called with each result a verifier reads: charges its outputs, or drops it (see above).
  void settle(const std::string& key, const sandbox::Result& r) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    if (it == entries_.end() || it->second.settled) return;
    const size_t out = r.stdout_text.size() + r.stderr_text.size() + r.detail.size();
    if (r.status == sandbox::Status::SandboxError || out > kMaxCachedOutput) {
      bytes_ -= it->second.bytes;
      entries_.erase(it);  // its key stays in order_ until it comes up for eviction
      return;
    }
    it->second.settled = true;
    it->second.bytes += out;
    bytes_ += out;
    evict();
  }

 private:
  struct Entry {
    std::shared_future<sandbox::Result> result;
    size_t bytes = 0;
    bool settled = false;
  };
  void evict() {
    while (bytes_ > kResultCacheBytes && !order_.empty()) {
      auto it = entries_.find(order_.front());
      if (it != entries_.end()) {
        bytes_ -= it->second.bytes;
        entries_.erase(it);
      }
      order_.pop_front();
    }
  }
  std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  std::deque<std::string> order_;  // keys, oldest first (a dropped entry's key may linger)
  size_t bytes_ = 0;
};

class CodeVerifier : public Verifier {
 public:
  CodeVerifier(const CodeVerifierOptions& o, VerifierContext ctx) : opt_(o), ctx_(std::move(ctx)) {
    if (!ctx_.executor)
      throw Error("the code verifier needs a sandbox pool", "rewards verifier 'code'",
                  "build it through RewardSet, which provides one");
  }
  bool waits() const override { return true; }

  Score verify(const Sample& s) const override {
    RowTests tests = read_tests(s.row);
    if (tests.format == TestFormat::None) return Score::not_applicable("the row has no tests");
    Score out;
    out.detail["format"] = format_name(tests.format);
    if (!tests.error.empty()) {
      out.detail["error"] = "bad tests in the row: " + tests.error;
      return out;
    }
    if (opt_.max_tests > 0) {
      if (tests.stdio.size() > static_cast<size_t>(opt_.max_tests)) tests.stdio.resize(static_cast<size_t>(opt_.max_tests));
      if (tests.asserts.size() > static_cast<size_t>(opt_.max_tests)) tests.asserts.resize(static_cast<size_t>(opt_.max_tests));
    }
    size_t n_tests = tests.format == TestFormat::Stdio ? tests.stdio.size() : tests.asserts.size();
    out.detail["tests"] = n_tests;
    if (n_tests == 0) {
      out.detail["error"] = "the row has an empty test list";
      return out;
    }
    ThinkSplit split = split_think(s.completion, s.prompt);
    if (opt_.grade == "answer" && split.opened && !split.closed) {
      out.detail["error"] = "the reasoning was never closed by </think>: no answer to grade";
      return out;
    }
    std::string_view graded = opt_.grade == "answer" ? split.answer : s.completion;
    std::string prefer = tests.format == TestFormat::Stdio && opt_.language != "auto" ? opt_.language : "python";
    CodeBlock block = last_code_block(graded, prefer);
    std::string code = block.found ? block.code : std::string(graded);
    if (code.find_first_not_of(" \t\r\n") == std::string::npos) {
      out.detail["error"] = "no code found";
      return out;
    }
    std::string language = "python";
    if (tests.format == TestFormat::Stdio) {
      language = opt_.language;
      if (language == "auto") language = (block.language == "cpp" || block.language == "c") ? "cpp" : "python";
    }
    out.detail["language"] = language;
    out.detail["code_block"] = block.found;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                            std::chrono::duration<double>(opt_.deadline_s));
    std::shared_ptr<sandbox::Executor> ex = ctx_.executor();
    size_t passed = tests.format == TestFormat::Stdio ? run_stdio(*ex, tests, code, language, deadline, out)
                                                      : run_asserts(*ex, tests, code, deadline, out);
    out.detail["passed"] = passed;
    out.passed = passed == n_tests;
    if (opt_.reward == "all_or_nothing") {
      out.reward = out.passed ? 1.0 : 0.0;
    } else {
      out.reward = static_cast<double>(passed) / static_cast<double>(n_tests);
    }
    return out;
  }

 private:
  using Clock = std::chrono::steady_clock;
  mutable ResultCache cache_;  // stdin/stdout results by job (opt_.cache)

  std::string cut(std::string_view s) const { return truncate_for_detail(s, static_cast<size_t>(opt_.detail_chars)); }

  void note_failure(Score& out, size_t index, std::string_view input, std::string_view expected,
                    std::string_view actual, const std::string& status, const std::string& why,
                    std::string_view stderr_text) const {
    if (out.detail.contains("first_failure")) return;
    json f = {{"index", index}, {"input", cut(input)}, {"expected", cut(expected)}, {"actual", cut(actual)},
              {"status", status}, {"why", why}};
    if (!stderr_text.empty()) f["stderr"] = cut(stderr_text.size() > 2000 ? stderr_text.substr(stderr_text.size() - 2000) : stderr_text);
    out.detail["first_failure"] = std::move(f);
  }

  size_t run_stdio(sandbox::Executor& ex, const RowTests& t, const std::string& code, const std::string& language,
                   Clock::time_point deadline, Score& out) const {
    struct Pending {
      std::shared_future<sandbox::Result> result;
      std::string cache_key;  // empty: not through the cache
    };
    auto submit = [&](const StdioTest& test) {
      sandbox::Job j;
      j.language = language;
      j.source = code;
      j.stdin_data = test.input;
      j.limits = opt_.limits;
      Pending p;
      if (opt_.cache) {
        p.result = cache_.submit(ex, std::move(j), &p.cache_key);
      } else {
        p.result = ex.submit(std::move(j)).share();
      }
      return p;
    };
    // Judges one finished (or abandoned) test; true when it passed.
    auto judge = [&](size_t i, const Pending& p) {
      const StdioTest& test = t.stdio[i];
      if (p.result.wait_until(deadline) != std::future_status::ready) {
        note_failure(out, i, test.input, test.output, "", "deadline",
                     "no result within the verifier's " + std::to_string(opt_.deadline_s) + " s deadline", "");
        return false;
      }
      const sandbox::Result& r = p.result.get();
      if (!p.cache_key.empty()) cache_.settle(p.cache_key, r);
      if (r.status != sandbox::Status::Ok) {
        note_failure(out, i, test.input, test.output, r.stdout_text, sandbox::status_name(r.status),
                     r.detail.empty() ? std::string("exit code ") + std::to_string(r.exit_code) : r.detail, r.stderr_text);
        return false;
      }
      OutputMatch m = compare_output(test.output, r.stdout_text, opt_.float_tol);
      if (!m.ok) note_failure(out, i, test.input, test.output, r.stdout_text, "ok", "wrong answer: " + m.why, r.stderr_text);
      return m.ok;
    };
    size_t passed = 0;
    if (opt_.stop_at_first_failure) {
      for (size_t i = 0; i < t.stdio.size(); ++i) {
        if (!judge(i, submit(t.stdio[i]))) break;
        ++passed;
      }
      return passed;
    }
    // All tests at once: the pool runs them concurrently.
    std::vector<Pending> pending;
    pending.reserve(t.stdio.size());
    for (const auto& test : t.stdio) pending.push_back(submit(test));
    for (size_t i = 0; i < pending.size(); ++i)
      if (judge(i, pending[i])) ++passed;
    return passed;
  }

  size_t run_asserts(sandbox::Executor& ex, const RowTests& t, std::string code, Clock::time_point deadline,
                     Score& out) const {
    // HumanEval completions often hold only the body or only the function: give them the
    // prompt (signature, imports, helpers) when the entry point is not defined.
    if (t.format == TestFormat::HumanEval && code.find("def " + t.entry_point) == std::string::npos)
      code = t.prelude + code;
    std::string nonce = make_nonce();
    json cfg = {{"nonce", nonce},
                {"tests", t.asserts},
                {"entry_point", t.entry_point},
                {"trusted_prelude", t.prelude},
                {"test_defs", t.test_defs},
                {"setup", t.setup},
                {"call_timeout_s", opt_.call_timeout_s},
                {"stop_at_first_failure", opt_.stop_at_first_failure}};
    sandbox::Job j;
    j.language = "python";
    j.source = assert_harness_source();
    j.stdin_data = cfg.dump();
    j.files = {{"candidate.py", code}};
    j.limits = opt_.limits;
    auto fut = ex.submit(std::move(j));
    if (fut.wait_until(deadline) != std::future_status::ready) {
      note_failure(out, 0, t.asserts[0], "", "", "deadline",
                   "no result within the verifier's " + std::to_string(opt_.deadline_s) + " s deadline", "");
      return 0;
    }
    sandbox::Result r = fut.get();
    // Verdict lines: "<nonce> PASS i", "<nonce> FAIL i <json reason>", "<nonce> DONE n",
    // "<nonce> LOADFAIL <json reason>". Lines without the nonce are ignored.
    std::set<size_t> pass;
    std::map<size_t, std::string> fail;
    bool done = false;
    std::string load_error;
    const std::string prefix = nonce + " ";
    size_t pos = 0;
    const std::string& so = r.stdout_text;
    while (pos < so.size()) {
      size_t e = so.find('\n', pos);
      if (e == std::string::npos) e = so.size();
      std::string_view line(so.data() + pos, e - pos);
      pos = e + 1;
      if (line.substr(0, prefix.size()) != prefix) continue;
      std::string_view rest = line.substr(prefix.size());
      auto word_end = rest.find(' ');
      std::string_view word = rest.substr(0, word_end);
      std::string_view arg = word_end == std::string_view::npos ? std::string_view() : rest.substr(word_end + 1);
      if (word == "DONE") {
        done = std::string(arg) == std::to_string(t.asserts.size());
      } else if (word == "LOADFAIL") {
        load_error = std::string(arg);
      } else if (word == "PASS" || word == "FAIL") {
        size_t sp = arg.find(' ');
        std::string idx(arg.substr(0, sp));
        if (idx.empty() || idx.find_first_not_of("0123456789") != std::string::npos || idx.size() > 9) continue;
        size_t i = std::stoul(idx);
        if (i >= t.asserts.size() || pass.count(i) || fail.count(i)) continue;  // one verdict per test
        if (word == "PASS") {
          pass.insert(i);
        } else {
          std::string why = sp == std::string_view::npos ? "" : std::string(arg.substr(sp + 1));
          try {
            why = json::parse(why).get<std::string>();
          } catch (const std::exception&) {
          }
          fail[i] = why;
        }
      }
    }
    if (!load_error.empty()) out.detail["load_error"] = cut(load_error);
    out.detail["sandbox_status"] = sandbox::status_name(r.status);
    // Without the DONE line the run did not finish: verdicts seen so far still count, the
    // rest fail.
    if (!done || r.status != sandbox::Status::Ok) {
      for (size_t i = 0; i < t.asserts.size(); ++i) {
        if (pass.count(i) || fail.count(i)) continue;
        std::string why = !done ? "the harness did not finish (" + std::string(sandbox::status_name(r.status)) +
                                      (r.detail.empty() ? "" : ": " + r.detail) + ")"
                                : "sandbox status " + std::string(sandbox::status_name(r.status));
        fail[i] = why;
      }
    }
    for (const auto& kv : fail) {
      note_failure(out, kv.first, t.asserts[kv.first], "", "", sandbox::status_name(r.status), kv.second, r.stderr_text);
      break;
    }
    return pass.size();
  }

  CodeVerifierOptions opt_;
  VerifierContext ctx_;
};

}  // namespace

std::shared_ptr<Verifier> make_code_verifier(const CodeVerifierOptions& opt, const VerifierContext& ctx) {
  return std::make_shared<CodeVerifier>(opt, ctx);
}

}  // namespace retort::rewards
