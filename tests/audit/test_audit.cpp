// Audit: the chains.jsonl reader, every filter, the summaries and flags, `run_audit` output
// modes, the HTML report (sections, caps, escaping of hostile model text) and the CLI.
//
// The fixture is generated here from a few parameters per chain; every expected count is
// computed from those parameters, not from the library.
#include <fcntl.h>     // defines: O_WRONLY
#include <spawn.h>     // defines: posix_spawn
#include <unistd.h>    // defines: environ
#include <sys/wait.h>  // defines: waitpid

#include <algorithm>
#include <cmath>
#include <cstdio>  // popen
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "audit/audit_command.h"
#include "audit/chain_log.h"
#include "audit/query.h"
#include "audit/report.h"
#include "common/error.h"
#include "error_of.h"  // defines: error_of
#include "jsonl_files.h"  // defines: read_text

#include <catch2/catch.hpp>
#include "run_capture.h"  // defines: run_to_file
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace fs = std::filesystem;
using nlohmann::json;
using namespace retort::audit;

namespace {

const std::string kBin = RETORT_BINARY_DIR;
const std::string kXss = "</script><img src=x onerror=alert(1)>";

// What the generator decided for one chain: the truth the tests count against.
struct Gen {
  json line;
  int64_t step = 0, length = 0;
  std::string prompt_id, reasoning, answer, text;
  bool is_math = false;
  bool math_passed = false, math_no_answer = false;
  bool code_passed = false;
  std::string code_status;  // "" when passed; runtime_error / time_limit / ok (wrong answer)
  std::string code_why;
  bool format_applicable = true, format_passed = false;
  double reward = 0;
  bool truncated = false;
  bool empty_reasoning = false, chinese = false, loops = false, contradicts = false, constant_program = false;
  std::string math_extracted;
  bool passed_all() const {
    bool main = is_math ? math_passed : code_passed;
    return main && (!format_applicable || format_passed);
  }
};

// 6 steps x 5 prompts x 4 samples. Even prompts are math, odd ones code (stdin/stdout).
std::vector<Gen> generate() {
  std::vector<Gen> out;
  int64_t k = 0;
  for (int64_t s = 1; s <= 6; ++s) {
    for (int64_t p = 0; p < 5; ++p) {
      for (int64_t g = 0; g < 4; ++g, ++k) {
        Gen c;
        c.step = s;
        c.prompt_id = "p" + std::to_string(p);
        c.is_math = p % 2 == 0;
        c.length = 20 + (k * 37) % 500;
        c.truncated = c.length >= 480;
        c.format_applicable = !(p == 4 && s == 1);
        c.format_passed = g != 3 || s % 2 == 0;
        c.empty_reasoning = g == 1 && s == 2;
        c.chinese = s == 3 && g == 2;
        c.loops = s == 5 && g == 2;
        c.reasoning = c.empty_reasoning ? "" : "Let me think about item " + std::to_string(k) + " carefully.";
        if (k % 7 == 0 && !c.empty_reasoning) c.reasoning += " WAIT, let me check again.";
        if (c.chinese) c.reasoning += " 我们需要计算这个数字的总和是多少 then add them.";
        if (c.loops) {
          c.reasoning.clear();
          for (int i = 0; i < 20; ++i) c.reasoning += "the same words come again and again ";
        }
        json verifiers = json::object();
        if (c.is_math) {
          std::string gold = std::to_string(p * 10 + s);
          c.math_passed = (s + p + g) % 3 != 0;
          c.math_no_answer = !c.math_passed && (s + g) % 2 == 0;
          if (c.math_passed) c.math_extracted = gold;
          else if (!c.math_no_answer) c.math_extracted = g == 3 ? "42" : "7";
          // The repeated answer: every wrong g == 3 math chain says 42.
          c.answer = c.math_no_answer ? "I am not sure." : "The answer is \\boxed{" + c.math_extracted + "}.";
          if (s == 4 && g == 0 && !c.math_no_answer) {
            c.reasoning += " so the result is \\boxed{13}";
            c.contradicts = c.math_extracted != "13";
          }
          json detail = {{"gold", gold}, {"think_closed", true}};
          if (c.math_no_answer) {
            detail["extraction"] = "none";
            detail["error"] = "no final answer found (\\boxed{}, <answer>, ####, \"the answer is\")";
          } else {
            detail["extraction"] = "boxed";
            detail["extracted"] = c.math_extracted;
            detail["compared_by"] = "exact";
          }
          verifiers["math"] = {{"reward", c.math_passed ? 1.0 : 0.0}, {"passed", c.math_passed}, {"detail", detail}};
          verifiers["code"] = {{"reward", nullptr}, {"passed", false}, {"detail", {{"not_applicable", "the row has no tests"}}}};
        } else {
          int64_t h = (s * 7 + g * 3 + p) % 5;
          c.code_passed = h <= 1;
          json detail = {{"format", "stdio"}, {"tests", 3}, {"language", "python"}, {"code_block", true}};
          c.constant_program = c.code_passed && p == 1 && g == 0;
          c.answer = c.constant_program ? "```python\nprint(6)\n```" : "```python\nprint(int(input()) * 2)\n```";
          if (c.code_passed) {
            detail["passed"] = 3;
          } else {
            detail["passed"] = 1;
            c.code_status = h == 2 ? "runtime_error" : h == 3 ? "time_limit" : "ok";
            c.code_why = h == 2 ? "exit code 1" : h == 3 ? "wall time limit 2 s" : "wrong answer: line 1: expected '6', got '7'";
            detail["first_failure"] = {{"index", 1}, {"input", "3\n"}, {"expected", "6\n"}, {"actual", h == 4 ? "7\n" : ""},
                                       {"status", c.code_status}, {"why", c.code_why}};
          }
          verifiers["math"] = {{"reward", nullptr}, {"passed", false}, {"detail", {{"not_applicable", "the row has no gold answer"}}}};
          verifiers["code"] = {{"reward", c.code_passed ? 1.0 : 0.0}, {"passed", c.code_passed}, {"detail", detail}};
        }
        if (c.format_applicable)
          verifiers["format"] = {{"reward", c.format_passed ? 0.2 : 0.0}, {"passed", c.format_passed}, {"detail", json::object()}};
        else
          verifiers["format"] = {{"reward", nullptr}, {"passed", false}, {"detail", {{"not_applicable", "off at step 1"}}}};
        c.reward = ((c.is_math ? c.math_passed : c.code_passed) ? 1.0 : 0.0) + (c.format_applicable && c.format_passed ? 0.2 : 0.0);
        std::string prompt = "Problem " + c.prompt_id + ": compute <b>the</b> value.";
        if (k == 5) c.answer += "\n" + kXss;
        c.text = c.reasoning + "\n</think>\n" + c.answer;
        c.line = {{"step", s},          {"prompt_id", c.prompt_id}, {"group", p},         {"sample", g},
                  {"prompt", prompt},   {"text", c.text},           {"reasoning", c.reasoning}, {"answer", c.answer},
                  {"verifiers", verifiers}, {"reward", c.reward},  {"advantage", 0.1 * static_cast<double>(g) - 0.15},
                  {"kl", 0.01 * static_cast<double>(s)}, {"length", c.length}, {"truncated", c.truncated}};
        out.push_back(std::move(c));
      }
    }
  }
  return out;
}

// Writes RUN_DIR with chains.jsonl (optionally with a cut last line), metrics.jsonl (with
// a cut last line) and config.resolved.json.
std::string write_run(const std::string& name, const std::vector<Gen>& chains, bool cut_last = false) {
  std::string dir = kBin + "/test_runs/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  {
    std::ofstream f(dir + "/chains.jsonl");
    for (const auto& c : chains) f << c.line.dump() << "\n";
    if (cut_last) f << chains.front().line.dump().substr(0, 57);  // a killed writer
  }
  {
    std::ofstream f(dir + "/metrics.jsonl");
    for (int s = 1; s <= 6; ++s)
      f << json{{"step", s}, {"reward_mean", 0.1 * s}, {"kl", 0.01 * s}, {"clip_fraction", 0.02}, {"length_mean", 100 + s}}.dump() << "\n";
    f << "{\"step\": 7, \"rew";
  }
  std::ofstream(dir + "/config.resolved.json") << json{{"run_dir", dir}, {"grpo", {{"group_size", 4}, {"beta", 0.04}}}}.dump(2);
  return dir;
}

// Counts the chains of `path` that `filter` keeps.
int64_t count_matches(const std::string& path, const ChainFilter& filter) {
  ChainQuery q(filter);
  JsonlReader r(path);
  json chain;
  std::string raw;
  int64_t n = 0;
  while (r.next(chain, raw))
    if (q.matches(view_chain(chain, path), chain)) ++n;
  return n;
}

template <class Pred>
int64_t count_if(const std::vector<Gen>& v, Pred p) {
  return std::count_if(v.begin(), v.end(), p);
}

}  // namespace

TEST_CASE("audit: every filter keeps exactly the chains it should", "[unit]") {
  std::vector<Gen> gen = generate();
  std::string dir = write_run("audit_filters", gen);
  std::string path = dir + "/chains.jsonl";

  struct Case {
    const char* name;
    std::function<void(ChainFilter&)> set;
    std::function<bool(const Gen&)> want;
  };
  std::vector<Case> cases = {
      {"no filter", [](ChainFilter&) {}, [](const Gen&) { return true; }},
      {"--step 2:4", [](ChainFilter& f) { parse_step_range("2:4", f); }, [](const Gen& c) { return c.step >= 2 && c.step <= 4; }},
      {"--step 5:", [](ChainFilter& f) { parse_step_range("5:", f); }, [](const Gen& c) { return c.step >= 5; }},
      {"--step :2", [](ChainFilter& f) { parse_step_range(":2", f); }, [](const Gen& c) { return c.step <= 2; }},
      {"--step 3", [](ChainFilter& f) { parse_step_range("3", f); }, [](const Gen& c) { return c.step == 3; }},
      {"--prompt p3", [](ChainFilter& f) { f.prompt_ids = {"p3"}; }, [](const Gen& c) { return c.prompt_id == "p3"; }},
      {"--prompt p0 --prompt p4", [](ChainFilter& f) { f.prompt_ids = {"p0", "p4"}; },
       [](const Gen& c) { return c.prompt_id == "p0" || c.prompt_id == "p4"; }},
      {"--passed math", [](ChainFilter& f) { f.passed = {"math"}; }, [](const Gen& c) { return c.is_math && c.math_passed; }},
      {"--failed math", [](ChainFilter& f) { f.failed = {"math"}; }, [](const Gen& c) { return c.is_math && !c.math_passed; }},
      {"--failed code", [](ChainFilter& f) { f.failed = {"code"}; }, [](const Gen& c) { return !c.is_math && !c.code_passed; }},
      {"--failed format", [](ChainFilter& f) { f.failed = {"format"}; },
       [](const Gen& c) { return c.format_applicable && !c.format_passed; }},
      {"--passed all", [](ChainFilter& f) { f.passed = {"all"}; }, [](const Gen& c) { return c.passed_all(); }},
      {"--failed all", [](ChainFilter& f) { f.failed = {"all"}; }, [](const Gen& c) { return !c.passed_all(); }},
      {"--passed code --passed format", [](ChainFilter& f) { f.passed = {"code", "format"}; },
       [](const Gen& c) { return !c.is_math && c.code_passed && c.format_applicable && c.format_passed; }},
      {"--reward-min 0.5 --reward-max 1.1", [](ChainFilter& f) { f.reward_min = 0.5, f.reward_max = 1.1; },
       [](const Gen& c) { return c.reward >= 0.5 && c.reward <= 1.1; }},
      {"--reward-max 0.1", [](ChainFilter& f) { f.reward_max = 0.1; }, [](const Gen& c) { return c.reward <= 0.1; }},
      {"--truncated", [](ChainFilter& f) { f.truncated = true; }, [](const Gen& c) { return c.truncated; }},
      {"--not-truncated", [](ChainFilter& f) { f.truncated = false; }, [](const Gen& c) { return !c.truncated; }},
      {"--sandbox-status runtime_error", [](ChainFilter& f) { f.sandbox_status = {"runtime_error"}; },
       [](const Gen& c) { return c.code_status == "runtime_error"; }},
      {"--sandbox-status time_limit --sandbox-status runtime_error",
       [](ChainFilter& f) { f.sandbox_status = {"time_limit", "runtime_error"}; },
       [](const Gen& c) { return c.code_status == "time_limit" || c.code_status == "runtime_error"; }},
      // "ok": code ran cleanly (passed) or ran and printed a wrong answer.
      {"--sandbox-status ok", [](ChainFilter& f) { f.sandbox_status = {"ok"}; },
       [](const Gen& c) { return !c.is_math && (c.code_passed || c.code_status == "ok"); }},
      {"--grep WAIT", [](ChainFilter& f) { f.grep = "WAIT"; }, [](const Gen& c) { return c.text.find("WAIT") != std::string::npos; }},
      {"--grep 'wait,' -i", [](ChainFilter& f) { f.grep = "wait,"; f.grep_ignore_case = true; },
       [](const Gen& c) { return c.text.find("WAIT,") != std::string::npos; }},
      {"--grep '\\\\boxed\\{4[0-9]\\}'", [](ChainFilter& f) { f.grep = "\\\\boxed\\{4[0-9]\\}"; },
       [](const Gen& c) { return c.is_math && !c.math_no_answer && c.math_extracted.size() == 2 && c.math_extracted[0] == '4'; }},
      {"--grep Han", [](ChainFilter& f) { f.grep = "\\p{Han}{3}"; }, [](const Gen& c) { return c.chinese; }},
      {"--flag empty_reasoning", [](ChainFilter& f) { f.flags = {"empty_reasoning"}; },
       [](const Gen& c) { return c.empty_reasoning && (c.reward >= 0.5 || c.passed_all()); }},
      {"--flag mixed_languages", [](ChainFilter& f) { f.flags = {"mixed_languages"}; }, [](const Gen& c) { return c.chinese; }},
      {"--flag repeated_ngrams", [](ChainFilter& f) { f.flags = {"repeated_ngrams"}; }, [](const Gen& c) { return c.loops; }},
      {"--flag constant_output", [](ChainFilter& f) { f.flags = {"constant_output"}; },
       [](const Gen& c) { return c.constant_program; }},
      {"--flag answer_contradicts_reasoning", [](ChainFilter& f) { f.flags = {"answer_contradicts_reasoning"}; },
       [](const Gen& c) { return c.contradicts; }},
      {"--flag answer_format", [](ChainFilter& f) { f.flags = {"answer_format"}; }, [](const Gen& c) { return c.math_no_answer; }},
      {"--step 2:5 --failed code --not-truncated", [](ChainFilter& f) { parse_step_range("2:5", f); f.failed = {"code"}; f.truncated = false; },
       [](const Gen& c) { return c.step >= 2 && c.step <= 5 && !c.is_math && !c.code_passed && !c.truncated; }},
  };
  for (const auto& tc : cases) {
    ChainFilter f;
    tc.set(f);
    int64_t want = count_if(gen, tc.want);
    INFO(tc.name << ": expected " << want);
    CHECK(count_matches(path, f) == want);
  }
  // The fixture exercises each filter: no case is vacuous (all or nothing).
  for (const auto& tc : cases) {
    if (std::string(tc.name) == "no filter") continue;
    int64_t want = count_if(gen, tc.want);
    INFO(tc.name);
    CHECK(want > 0);
    CHECK(want < static_cast<int64_t>(gen.size()));
  }
}

TEST_CASE("audit: filter arguments are checked", "[unit]") {
  ChainFilter f;
  CHECK(error_of([&] { parse_step_range("10-20", f); }).find("--step") != std::string::npos);
  CHECK(error_of([&] { parse_step_range(":", f); }).find("bad step range") != std::string::npos);
  CHECK(error_of([&] { parse_step_range("9:3", f); }).find("empty step range") != std::string::npos);
  CHECK(error_of([&] { parse_step_range("x", f); }).find("bad step range") != std::string::npos);
  CHECK(error_of([&] {
          ChainFilter g;
          g.grep = "(unclosed";
          ChainQuery q(g);
        }).find("--grep") != std::string::npos);
  CHECK(error_of([&] {
          ChainFilter g;
          g.sandbox_status = {"timeout"};
          ChainQuery q(g);
        }).find("time_limit") != std::string::npos);  // the known names are listed
  CHECK(error_of([&] {
          ChainFilter g;
          g.flags = {"hacks"};
          ChainQuery q(g);
        }).find("empty_reasoning") != std::string::npos);
  CHECK(error_of([&] {
          ChainFilter g;
          g.reward_min = 2, g.reward_max = 1;
          ChainQuery q(g);
        }).find("empty reward range") != std::string::npos);
}

TEST_CASE("audit: summaries match counts computed from the fixture", "[unit]") {
  std::vector<Gen> gen = generate();
  std::string dir = write_run("audit_summary", gen);
  Summary sum;
  {
    JsonlReader r(dir + "/chains.jsonl");
    json chain;
    std::string raw;
    while (r.next(chain, raw)) sum.add(view_chain(chain, "x"), chain);
  }
  REQUIRE(sum.chains() == static_cast<int64_t>(gen.size()));

  // Pass rate per step, per verifier and combined.
  for (int64_t s = 1; s <= 6; ++s) {
    INFO("step " << s);
    const StepStats& st = sum.steps().at(s);
    auto at = [&](auto pred) { return count_if(gen, [&](const Gen& c) { return c.step == s && pred(c); }); };
    CHECK(st.chains == at([](const Gen&) { return true; }));
    CHECK(st.pass.at("math").applicable == at([](const Gen& c) { return c.is_math; }));
    CHECK(st.pass.at("math").passed == at([](const Gen& c) { return c.is_math && c.math_passed; }));
    CHECK(st.pass.at("code").passed == at([](const Gen& c) { return !c.is_math && c.code_passed; }));
    CHECK(st.pass.at("format").applicable == at([](const Gen& c) { return c.format_applicable; }));
    CHECK(st.pass.at("all").passed == at([](const Gen& c) { return c.passed_all(); }));
    CHECK(st.truncated == at([](const Gen& c) { return c.truncated; }));
    double rsum = 0;
    for (const auto& c : gen) rsum += c.step == s ? c.reward : 0;
    CHECK(st.reward_sum == Approx(rsum));
  }

  // Length quantiles (linear interpolation between closest ranks) and the histogram.
  std::vector<double> lens;
  for (const auto& c : gen) lens.push_back(static_cast<double>(c.length));
  std::sort(lens.begin(), lens.end());
  auto q = [&](double p) {
    double pos = p * (lens.size() - 1);
    size_t lo = static_cast<size_t>(pos);
    return lens[lo] + (pos - lo) * (lens[std::min(lo + 1, lens.size() - 1)] - lens[lo]);
  };
  LengthStats ls = sum.lengths(10);
  CHECK(ls.n == static_cast<int64_t>(lens.size()));
  CHECK(ls.quantiles.at("min") == lens.front());
  CHECK(ls.quantiles.at("max") == lens.back());
  CHECK(ls.quantiles.at("p50") == Approx(q(0.5)));
  CHECK(ls.quantiles.at("p90") == Approx(q(0.9)));
  CHECK(ls.quantiles.at("p25") == Approx(q(0.25)));
  int64_t hist_total = 0;
  for (const auto& [edge, count] : ls.histogram) {
    int64_t want = count_if(gen, [&](const Gen& c) { return c.length >= edge && c.length < edge + ls.bin_width; });
    INFO("bin from " << edge);
    CHECK(count == want);
    hist_total += count;
  }
  CHECK(hist_total == static_cast<int64_t>(gen.size()));
  CHECK(ls.histogram.size() <= 10);

  // Failure reasons: each reason's count.
  std::map<std::string, int64_t> want_reasons;
  for (const auto& c : gen) {
    if (c.is_math && !c.math_passed) want_reasons[c.math_no_answer ? "math: no final answer found (\\boxed{}, <answer>, ####, \"the answer is\")" : "math: wrong answer"]++;
    if (!c.is_math && !c.code_passed)
      want_reasons[c.code_status == "ok" ? "code: wrong answer" : "code: " + c.code_status + ": " + c.code_why]++;
    if (c.format_applicable && !c.format_passed) want_reasons["format: not passed"]++;
    bool failed_any = (c.is_math ? !c.math_passed : !c.code_passed) || (c.format_applicable && !c.format_passed);
    if (failed_any && c.truncated) want_reasons["truncated at the length limit"]++;
  }
  auto reasons = sum.failure_reasons(100);
  REQUIRE(reasons.size() == want_reasons.size());
  for (const auto& r : reasons) {
    INFO(r.reason);
    REQUIRE(want_reasons.count(r.reason));
    CHECK(r.count == want_reasons[r.reason]);
  }
  for (size_t i = 1; i < reasons.size(); ++i) CHECK(reasons[i - 1].count >= reasons[i].count);  // most common first
  CHECK(sum.failure_reasons(2).size() == 2);

  // One prompt across steps.
  auto hist = sum.prompt_history("p2");
  CHECK(hist.size() == 6);
  for (const auto& [step, ps] : hist) {
    INFO("p2 step " << step);
    auto of = [&](const Gen& c) { return c.prompt_id == "p2" && c.step == step; };
    CHECK(ps.chains == count_if(gen, of));
    CHECK(ps.passed == count_if(gen, [&](const Gen& c) { return of(c) && c.passed_all(); }));
    int64_t len = 0;
    for (const auto& c : gen) len += of(c) ? c.length : 0;
    CHECK(ps.length_sum == Approx(static_cast<double>(len)));
  }
  CHECK(sum.prompt_history("nope").empty());

  // Answers repeated verbatim across 3+ prompts.
  std::map<std::string, std::set<std::string>> by_answer;
  for (const auto& c : gen) by_answer[c.answer].insert(c.prompt_id);
  std::map<std::string, int64_t> want_rep;
  for (const auto& [a, ps] : by_answer)
    if (ps.size() >= 3) want_rep[a] = static_cast<int64_t>(ps.size());
  auto rep = sum.repeated_answers(100);
  REQUIRE(!want_rep.empty());
  REQUIRE(rep.size() == want_rep.size());
  for (const auto& r : rep) {
    INFO(r.answer);
    REQUIRE(want_rep.count(r.answer));
    CHECK(r.prompts == want_rep[r.answer]);
  }

  // Flag counts agree with the per-chain filter counts above.
  CHECK(sum.flag_counts().at("mixed_languages").first == count_if(gen, [](const Gen& c) { return c.chinese; }));
  CHECK(sum.flag_counts().at("repeated_ngrams").first == count_if(gen, [](const Gen& c) { return c.loops; }));

  // The JSON and text forms carry the same numbers.
  json j = sum.to_json(5, "p2");
  CHECK(j["chains"] == sum.chains());
  CHECK(j["steps"].size() == 6);
  CHECK(j["prompt_history"]["steps"].size() == 6);
  CHECK(j["failure_reasons"].size() == 5);
  std::string text = sum.to_text(5, "p2");
  CHECK(text.find("pass rate per step") != std::string::npos);
  CHECK(text.find("most common failure reasons") != std::string::npos);
  CHECK(text.find("prompt p2 across steps") != std::string::npos);
  CHECK(text.find(reasons.front().reason) != std::string::npos);
}

TEST_CASE("audit: a cut last line is skipped, a bad middle line names file:line", "[unit]") {
  std::vector<Gen> gen = generate();
  std::string dir = write_run("audit_cut", gen, /*cut_last=*/true);
  std::string path = dir + "/chains.jsonl";
  JsonlReader r(path);
  json chain;
  std::string raw;
  int64_t n = 0;
  while (r.next(chain, raw)) ++n;
  CHECK(n == static_cast<int64_t>(gen.size()));
  CHECK(r.cut_lines() == 1);

  // The same cut line in the middle: an error that names the line.
  std::string bad = kBin + "/test_runs/audit_cut/bad.jsonl";
  {
    std::ofstream f(bad);
    for (size_t i = 0; i < 10; ++i) f << gen[i].line.dump() << "\n";
    f << gen[10].line.dump().substr(0, 40) << "\n";  // line 11
    f << "\n";
    for (size_t i = 11; i < 15; ++i) f << gen[i].line.dump() << "\n";
  }
  std::string e = error_of([&] {
    JsonlReader rb(bad);
    while (rb.next(chain, raw)) {
    }
  });
  CHECK(e.find("bad.jsonl:11") != std::string::npos);

  // A line that is JSON but not an object, and a chain field of the wrong type.
  {
    std::ofstream f(bad);
    f << gen[0].line.dump() << "\n[1, 2]\n" << gen[1].line.dump() << "\n";
  }
  e = error_of([&] {
    JsonlReader rb(bad);
    while (rb.next(chain, raw)) {
    }
  });
  CHECK(e.find("bad.jsonl:2") != std::string::npos);
  json wrong = gen[0].line;
  wrong["step"] = "three";
  e = error_of([&] { view_chain(wrong, "chains.jsonl:7"); });
  CHECK(e.find("chains.jsonl:7") != std::string::npos);
  CHECK(e.find("step") != std::string::npos);
  json missing = gen[0].line;
  missing.erase("verifiers");
  CHECK(error_of([&] { view_chain(missing, "chains.jsonl:8"); }).find("verifiers") != std::string::npos);
  // Through run_audit too.
  {
    std::ofstream f(bad);
    f << gen[0].line.dump() << "\n{\"step\": \n" << gen[1].line.dump() << "\n";
  }
  AuditOptions opt;
  opt.run_dir = bad;
  std::ostringstream out;
  CHECK(error_of([&] { run_audit(opt, out); }).find("bad.jsonl:2") != std::string::npos);
}

TEST_CASE("audit: run_audit prints JSON lines, readable chains, summaries; --limit stops early", "[unit]") {
  std::vector<Gen> gen = generate();
  std::string dir = write_run("audit_run", gen, /*cut_last=*/true);
  AuditOptions opt;
  opt.run_dir = dir;
  opt.filter.failed = {"code"};
  std::ostringstream out;
  AuditResult res = run_audit(opt, out);
  int64_t want = count_if(gen, [](const Gen& c) { return !c.is_math && !c.code_passed; });
  CHECK(res.matched == want);
  CHECK(res.scanned == static_cast<int64_t>(gen.size()));
  // Each output line is one of the matching chains, unchanged, in file order.
  std::istringstream lines(out.str());
  std::string line;
  std::vector<json> got;
  while (std::getline(lines, line)) got.push_back(json::parse(line));
  REQUIRE(static_cast<int64_t>(got.size()) == want);
  size_t gi = 0;
  for (const auto& c : gen) {
    if (c.is_math || c.code_passed) continue;
    CHECK(got[gi++] == c.line);
  }

  // --limit: three lines, and reading stopped at the third match.
  opt.limit = 3;
  std::ostringstream lim;
  res = run_audit(opt, lim);
  CHECK(res.printed == 3);
  std::string lim_text = lim.str();
  CHECK(std::count(lim_text.begin(), lim_text.end(), '\n') == 3);
  CHECK(res.scanned < static_cast<int64_t>(gen.size()));

  // --show.
  opt.limit = 1;
  opt.show = true;
  std::ostringstream show;
  run_audit(opt, show);
  for (const char* part : {"==== step", "--- reasoning", "--- answer", "--- verifiers", "code: FAILED", "first failure"})
    CHECK(show.str().find(part) != std::string::npos);

  // --summary (all matches, not limited) and --summary --json.
  opt.show = false;
  opt.summary = true;
  opt.limit = -1;
  opt.filter = ChainFilter{};
  opt.filter.prompt_ids = {"p1"};
  std::ostringstream sum_text;
  res = run_audit(opt, sum_text);
  CHECK(res.printed == 0);
  CHECK(sum_text.str().find("prompt p1 across steps") != std::string::npos);
  opt.summary_json = true;
  std::ostringstream sum_json;
  run_audit(opt, sum_json);
  json sj = json::parse(sum_json.str());
  CHECK(sj["chains"] == count_if(gen, [](const Gen& c) { return c.prompt_id == "p1"; }));

  // A verifier no chain has is an error that lists the known ones.
  AuditOptions typo;
  typo.run_dir = dir;
  typo.filter.passed = {"maths"};
  std::ostringstream none;
  std::string e = error_of([&] { run_audit(typo, none); });
  CHECK(e.find("maths") != std::string::npos);
  for (const char* known : {"math", "code", "format"}) CHECK(e.find(known) != std::string::npos);
  CHECK(none.str().empty());
  // A missing run directory.
  typo.run_dir = dir + "/nope";
  CHECK(error_of([&] { run_audit(typo, none); }).find("does not exist") != std::string::npos);
}

TEST_CASE("audit: report.html has every section, caps the chains and escapes model text", "[unit]") {
  std::vector<Gen> gen = generate();
  std::string dir = write_run("audit_report", gen, /*cut_last=*/true);
  std::ofstream(dir + "/eval.json") << R"({"teacher": {"gsm8k": {"pass@1": 0.25, "maj@4": 0.5}}, "student": {"gsm8k": {"pass@1": 0.125}}})";
  ReportOptions opt;
  opt.run_dir = dir;
  opt.per_step = 100;  // every chain of this small run
  ReportResult res = write_report(opt);
  REQUIRE(res.path == dir + "/report.html");
  REQUIRE(fs::exists(res.path));
  CHECK(res.chains == static_cast<int64_t>(gen.size()));
  CHECK(res.metric_rows == 6);  // the cut last metrics line is skipped
  CHECK(res.eval);
  std::string html = read_text(res.path);
  for (const char* id : {"id=\"summary\"", "id=\"eval\"", "id=\"metrics\"", "id=\"pass-rate\"", "id=\"lengths\"",
                         "id=\"failures\"", "id=\"flags\"", "id=\"chains\"", "id=\"chains-data\""})
    CHECK(html.find(id) != std::string::npos);
  for (const char* text : {"reward_mean", "clip_fraction", "<svg", "teacher / gsm8k", "maj@4", "empty_reasoning",
                           "constant_output", "code: runtime_error: exit code 1", "group_size"}) {
    INFO(text);
    CHECK(html.find(text) != std::string::npos);
  }
  // Self-contained: nothing fetched.
  CHECK(html.find("src=\"http") == std::string::npos);
  CHECK(html.find("href=\"http") == std::string::npos);

  // Hostile text: the only "</script>" are the page's own two; no live <img> or <b> from the chains.
  size_t closes = 0;
  for (size_t p = html.find("</script>"); p != std::string::npos; p = html.find("</script>", p + 1)) ++closes;
  CHECK(closes == 2);
  CHECK(html.find("<img") == std::string::npos);
  CHECK(html.find("<b>the</b>") == std::string::npos);

  // The embedded chains decode back to the original text.
  const std::string open = "<script type=\"application/json\" id=\"chains-data\">";
  size_t a = html.find(open);
  REQUIRE(a != std::string::npos);
  a += open.size();
  size_t b = html.find("</script>", a);
  json data = json::parse(html.substr(a, b - a));
  REQUIRE(data["chains"].size() == static_cast<size_t>(res.embedded));
  bool found = false;
  for (const auto& c : data["chains"])
    if (c["answer"].get<std::string>().find(kXss) != std::string::npos) found = true;
  CHECK(found);
  CHECK(res.embedded == static_cast<int64_t>(gen.size()));

  // Caps: at most max_chains, flagged chains first, and the page says what was left out.
  opt.max_chains = 10;
  opt.out = dir + "/small.html";
  res = write_report(opt);
  CHECK(res.embedded == 10);
  html = read_text(opt.out);
  CHECK(html.find("left out: " + std::to_string(gen.size() - 10)) != std::string::npos);
  a = html.find(open) + open.size();
  data = json::parse(html.substr(a, html.find("</script>", a) - a));
  REQUIRE(data["chains"].size() == 10);
  int64_t flagged_total = 0;
  {
    JsonlReader r(dir + "/chains.jsonl");
    json chain;
    std::string raw;
    while (r.next(chain, raw)) flagged_total += !chain_flags(view_chain(chain, "x"), chain, FlagOptions{}).empty();
  }
  REQUIRE(flagged_total >= 10);
  for (const auto& c : data["chains"]) CHECK(!c["flags"].empty());

  // A run folder with neither chains nor metrics is an error.
  std::string empty = kBin + "/test_runs/audit_empty";
  fs::remove_all(empty);
  fs::create_directories(empty);
  ReportOptions eo;
  eo.run_dir = empty;
  CHECK(error_of([&] { write_report(eo); }).find("nothing to report") != std::string::npos);
}

TEST_CASE("audit: report.html opens with RUN_DIR/results.json's table, before the chain browser", "[unit]") {
  std::vector<Gen> gen = generate();
  std::string dir = write_run("audit_report_results", gen);
  ReportOptions opt;
  opt.run_dir = dir;
  // Without results.json the page opens with the run summary, as before.
  std::string html = read_text(write_report(opt).path);
  CHECK(html.find("id=\"results\"") == std::string::npos);
  CHECK(html.find("<section") == html.find("<section id=\"summary\">"));

  json table = {{"title", "Per stage"},
                {"columns", {"stage", "math pass@1", "note"}},
                {"rows", {{"teacher", "37.9%", 1.5}, {"student", "44.1%", kXss}}},
                {"notes", {"target >= +5", "<b>x</b>"}}};
  std::ofstream(dir + "/results.json") << table.dump();
  ReportResult res = write_report(opt);
  CHECK(res.results);
  html = read_text(res.path);
  // The first section is the table; the chain browser comes after it.
  const size_t first = html.find("<section");
  REQUIRE(first != std::string::npos);
  CHECK(html.compare(first, 22, "<section id=\"results\">") == 0);
  const size_t end = html.find("</section>", first);
  REQUIRE(end != std::string::npos);
  CHECK(html.find("id=\"chains\"") > end);
  CHECK(html.find("<a href=\"#results\">") < first);  // listed in the navigation
  const std::string section = html.substr(first, end - first);
  CHECK(section.find("<h2>Per stage</h2>") != std::string::npos);
  // Header, then the rows in order, each headed by its first cell; numbers as numbers.
  size_t at = 0;
  for (const char* text : {"<th>stage</th>", "<th>math pass@1</th>", "<th>note</th>", "<th>teacher</th>", "37.9%", "1.5",
                           "<th>student</th>", "44.1%", "target &gt;= +5", "&lt;b&gt;x&lt;/b&gt;"}) {
    INFO(text);
    const size_t next = section.find(text, at);
    CHECK(next != std::string::npos);
    if (next != std::string::npos) at = next;
  }
  // Cells are text, never markup.
  CHECK(section.find("<img") == std::string::npos);
  CHECK(section.find("<b>x</b>") == std::string::npos);

  // A results.json of another shape is an error that names the file.
  std::ofstream(dir + "/results.json") << R"({"columns": ["a", "b"], "rows": [["only one"]]})";
  std::string e = error_of([&] { write_report(opt); });
  CHECK(e.find("results.json") != std::string::npos);
  CHECK(e.find("row 0") != std::string::npos);
  std::ofstream(dir + "/results.json") << R"({"rows": []})";
  CHECK(error_of([&] { write_report(opt); }).find("columns") != std::string::npos);
}

TEST_CASE("audit: json_for_script and html_escape", "[unit]") {
  json j = {{"t", kXss + " <!-- & \xE2\x80\xA8"}};
  std::string s = json_for_script(j);
  CHECK(s.find('<') == std::string::npos);
  CHECK(s.find('>') == std::string::npos);
  CHECK(s.find('&') == std::string::npos);
  CHECK(s.find("\xE2\x80\xA8") == std::string::npos);
  CHECK(json::parse(s) == j);
  CHECK(html_escape("<a href='x'>\"&\"</a>") == "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;");
}

TEST_CASE("audit: the retort CLI runs audit and report on a fixture run", "[unit]") {
  std::string bin = kBin + "/retort";
  if (!fs::exists(bin)) {
    WARN("no " << bin << " in this build (RETORT_BUILD_CORE=OFF builds no executable): CLI not exercised");
    return;
  }
  std::vector<Gen> gen = generate();
  std::string dir = write_run("audit_cli", gen);
  auto run = [&](std::vector<std::string> args, const std::string& out_path) {
    return run_to_file(bin, std::move(args), out_path);
  };
  std::string out = dir + "/cli.out";
  REQUIRE(run({"audit", dir, "--failed", "math", "--step", "2:5"}, out) == 0);
  std::string text = read_text(out);
  int64_t want = count_if(gen, [](const Gen& c) { return c.is_math && !c.math_passed && c.step >= 2 && c.step <= 5; });
  CHECK(std::count(text.begin(), text.end(), '\n') == want);

  CHECK(run({"audit", dir, "--summary", "--prompt", "p3"}, out) == 0);
  CHECK(read_text(out).find("prompt p3 across steps") != std::string::npos);

  // Bad flags: non-zero exit, nothing on stdout, one message on stderr.
  CHECK(run({"audit", dir, "--stepp", "3"}, out) != 0);
  CHECK(run({"audit", dir, "--step", "a:b"}, out) != 0);
  CHECK(read_text(out).empty());
  CHECK(read_text(out + ".err").find("--step") != std::string::npos);
  CHECK(run({"audit", dir, "--passed", "maths"}, out) != 0);

  fs::remove(dir + "/report.html");
  REQUIRE(run({"report", dir}, out) == 0);
  CHECK(fs::exists(dir + "/report.html"));
  CHECK(json::parse(read_text(out))["chains"] == static_cast<int64_t>(gen.size()));
}

TEST_CASE("audit: report.html renders in headless Chromium and hostile text stays text", "[unit]") {
  std::string browser;
  for (const char* b : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (fs::exists(b)) browser = b;
  if (browser.empty()) {
    WARN("no Chromium (Debian package chromium): the report is not checked in a browser");
    return;
  }
  std::vector<Gen> gen = generate();
  std::string dir = write_run("audit_browser", gen);
  ReportOptions opt;
  opt.run_dir = dir;
  opt.per_step = 100;
  ReportResult res = write_report(opt);
  // The page's own script selects the first chain matching #search=...: the hostile one.
  auto dom_of = [&](const std::string& hash) {
    std::string profile = dir + "/chromium-profile";
    std::string cmd = "timeout 90 " + browser + " --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking"
                      " --disable-component-update --disable-sync --disable-quic --user-data-dir=" +
                      profile + " --dump-dom 'file://" + res.path + hash + "' 2>/dev/null";
    std::string dom;
    FILE* p = popen(cmd.c_str(), "r");
    REQUIRE(p);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0) dom.append(buf, n);
    pclose(p);
    return dom;
  };
  std::string dom = dom_of("#search=onerror");
  REQUIRE(!dom.empty());
  // The script ran: the count line and the rows are written by it.
  CHECK(dom.find("1 of " + std::to_string(res.embedded) + " embedded chains match") != std::string::npos);
  CHECK(dom.find("class=\"row") != std::string::npos);
  // The hostile chain is displayed, as text: escaped in the serialised DOM, no <img> element.
  CHECK(dom.find("&lt;img src=x onerror=alert(1)&gt;") != std::string::npos);
  CHECK(dom.find("<img") == std::string::npos);
  CHECK(dom.find("pre class=\"reasoning\"") != std::string::npos);
  CHECK(dom.find("pre class=\"answer\"") != std::string::npos);
  // Without a search every embedded chain is listed (up to the first page of 200).
  dom = dom_of("");
  CHECK(dom.find(std::to_string(res.embedded) + " of " + std::to_string(res.embedded) + " embedded chains match") !=
        std::string::npos);
}

TEST_CASE("chain log: a failed write is an error at the next flush, never silent", "[unit]") {
  retort::ChainLog log("/dev/full");  // every write fails with ENOSPC, as on a full disk
  log.write(nlohmann::json{{"step", 1}, {"chain", 0}});
  CHECK_THROWS_WITH(log.flush(), Catch::Contains("/dev/full") && Catch::Contains("chain log") && Catch::Contains("No space left on device"));
  CHECK_THROWS_WITH(log.write(nlohmann::json{{"step", 1}, {"chain", 1}}), Catch::Contains("/dev/full"));
}
