// The synthetic teacher graded by the project's own verifiers: every math trace passes the
// math verifier (and its check line is equivalent to the answer by the math engine), and the
// code tasks' expected outputs are what the reference programs print in the sandbox; the
// code verifier passes the teacher's completions and fails a program that prints a constant.
#include <catch2/catch.hpp>

#include <memory>  // defines: std::shared_ptr
#include <vector>  // defines: std::vector

#include "data/synthetic.h"         // defines: generate_synthetic
#include "rewards/code_verifier.h"  // defines: make_code_verifier, CodeVerifierOptions
#include "rewards/math/equiv.h"     // defines: answers_equivalent
#include "rewards/math_verifier.h"  // defines: make_math_verifier
#include "rewards/tool_calls.h"     // defines: find_tool_calls, ToolFormat
#include "sandbox/executor.h"       // defines: sandbox::Executor

using namespace retort::rewards;
using json = nlohmann::json;

namespace {

retort::SyntheticOptions grading_options() {
  retort::SyntheticOptions o;
  o.seed = 21;
  o.train.math = 400, o.train.code = 200;
  o.valid.math = 40, o.valid.code = 20;
  o.rl.math = 100, o.rl.code = 40;
  o.eval.math = 100, o.eval.code = 40;
  return o;
}

std::vector<const retort::SyntheticProblem*> of_kind(const retort::SyntheticData& d, const std::string& kind) {
  std::vector<const retort::SyntheticProblem*> out;
  for (const auto* v : {&d.train, &d.valid, &d.rl_math, &d.rl_code, &d.eval_math, &d.eval_code})
    for (const auto& p : *v)
      if (p.kind == kind) out.push_back(&p);
  return out;
}

}  // namespace

TEST_CASE("synthetic math traces are graded correct by the math verifier", "[unit]") {
  retort::SyntheticData d = retort::generate_synthetic(grading_options());
  auto verifier = make_math_verifier(MathVerifierOptions{});
  auto problems = of_kind(d, "math");
  REQUIRE(problems.size() == 640);
  int wrong_rejected = 0;
  for (const auto* p : problems) {
    json row = retort::prompt_line(*p);
    INFO(p->id << ": " << p->prompt << "\n" << p->completion);
    CHECK(gold_answer(row) == p->answer);
    Score s = verifier->verify(Sample{p->prompt, p->completion, row});
    INFO(s.detail.dump());
    CHECK(s.passed);
    CHECK(s.reward == 1.0);
    CHECK(s.detail.value("extraction", "") == "boxed");
    // The check line recomputes step by step ("e0 = e1 = ... = answer."): every expression
    // of it, read by the math engine, equals the answer, and it ends in a plain number.
    size_t at = p->completion.rfind("Check: ");
    REQUIRE(at != std::string::npos);
    std::string check = p->completion.substr(at + 7, p->completion.find('\n', at) - at - 7);
    REQUIRE(check.size() > 1);
    REQUIRE(check.back() == '.');
    check.pop_back();
    std::vector<std::string> parts;
    for (size_t from = 0;;) {
      size_t eq = check.find(" = ", from);
      parts.push_back(check.substr(from, eq == std::string::npos ? std::string::npos : eq - from));
      if (eq == std::string::npos) break;
      from = eq + 3;
    }
    REQUIRE(parts.size() >= 2);
    CHECK(parts.back() == p->answer);
    for (const auto& expr : parts) {
      INFO(expr);
      CHECK(math::answers_equivalent(p->answer, expr).equal);
      CHECK_FALSE(math::answers_equivalent(std::to_string(std::stoll(p->answer) + 1), expr).equal);
    }
    // The same trace against a different gold must fail: the pass above is not vacuous.
    json off = row;
    off["answer"] = std::to_string(std::stoll(p->answer) + 1);
    wrong_rejected += !verifier->verify(Sample{p->prompt, p->completion, off}).passed;
  }
  CHECK(wrong_rejected == static_cast<int>(problems.size()));
}

TEST_CASE("synthetic code tasks: reference programs print the expected outputs in the sandbox", "[sandbox]") {
  retort::sandbox::ExecutorConfig cfg;
  cfg.workers = 4;  // jobs mostly wait on interpreter start-up
  auto pool = std::make_shared<retort::sandbox::Executor>(cfg);
  retort::SyntheticData d = retort::generate_synthetic(grading_options());
  auto problems = of_kind(d, "code");
  REQUIRE(problems.size() == 300);

  // A spread sample (every split, list and pair tasks): each test of each program, exactly.
  std::vector<const retort::SyntheticProblem*> sample;
  for (size_t i = 0; i < problems.size(); i += 10) sample.push_back(problems[i]);
  struct Pending {
    const retort::SyntheticProblem* p;
    size_t test;
    std::future<retort::sandbox::Result> result;
  };
  std::vector<Pending> pending;
  for (const auto* p : sample) {
    for (size_t t = 0; t < p->tests.size(); ++t) {
      retort::sandbox::Job job;
      job.language = "python";
      job.source = p->program;
      job.stdin_data = p->tests[t]["input"].get<std::string>();
      pending.push_back({p, t, pool->submit(std::move(job))});
    }
  }
  for (auto& pr : pending) {
    retort::sandbox::Result r = pr.result.get();
    INFO(pr.p->id << " test " << pr.test << ": " << pr.p->prompt << "\n" << pr.p->program << "input:\n"
                  << pr.p->tests[pr.test]["input"].get<std::string>() << "stderr: " << r.stderr_text << r.detail);
    CHECK(r.status == retort::sandbox::Status::Ok);
    CHECK(r.stdout_text == pr.p->tests[pr.test]["output"].get<std::string>());
  }

  // The code verifier, on the teacher's completions: all pass. A program that prints the
  // first test's output whatever the input fails.
  CodeVerifierOptions opt;
  opt.reward = "all_or_nothing";
  VerifierContext ctx;
  ctx.executor = [pool] { return pool; };
  auto verifier = make_code_verifier(opt, ctx);
  for (size_t i = 0; i < sample.size(); i += 3) {
    const auto* p = sample[i];
    json row = retort::prompt_line(*p);
    INFO(p->id << ": " << p->completion);
    Score s = verifier->verify(Sample{p->prompt, p->completion, row});
    INFO(s.detail.dump());
    CHECK(s.passed);
    std::string constant = p->tests[0]["output"].get<std::string>();
    constant.pop_back();
    std::string cheat = "<think>\nprint it\n</think>\n```python\nprint(" + json(constant).dump() + ")\n```";
    CHECK_FALSE(verifier->verify(Sample{p->prompt, cheat, row}).passed);
  }
}

TEST_CASE("synthetic tool traces: the same problems, and each math trace's Python call prints its answer in the sandbox",
          "[sandbox]") {
  retort::SyntheticOptions plain_opts = grading_options(), tool_opts = grading_options();
  tool_opts.tools = "python";
  retort::SyntheticData plain = retort::generate_synthetic(plain_opts), tools = retort::generate_synthetic(tool_opts);
  // Only the math traces change: the same problems, answers and code traces, in the same order.
  REQUIRE(tools.train.size() == plain.train.size());
  for (size_t i = 0; i < plain.train.size(); ++i) {
    CHECK(tools.train[i].prompt == plain.train[i].prompt);
    CHECK(tools.train[i].answer == plain.train[i].answer);
    if (plain.train[i].kind == "code") CHECK(tools.train[i].completion == plain.train[i].completion);
  }
  for (size_t i = 0; i < plain.eval_math.size(); ++i) CHECK(tools.eval_math[i].prompt == plain.eval_math[i].prompt);

  retort::sandbox::ExecutorConfig cfg;
  cfg.workers = 4;
  retort::sandbox::Executor pool(cfg);
  auto verifier = make_math_verifier(MathVerifierOptions{});
  std::vector<const retort::SyntheticProblem*> sample;
  auto math = of_kind(tools, "math");
  for (size_t i = 0; i < math.size(); i += 8) sample.push_back(math[i]);
  std::vector<std::future<retort::sandbox::Result>> runs;
  std::vector<ToolCallSpan> calls;
  for (const auto* p : sample) {
    INFO(p->id << ":\n" << p->completion);
    auto found = find_tool_calls(p->completion, ToolFormat::Python);
    REQUIRE(found.size() == 1);
    CHECK(found[0].answered);
    CHECK(found[0].status == "ok");
    // The model writes no arithmetic result itself: no step-by-step check line.
    CHECK(p->completion.find("Check:") == std::string::npos);
    CHECK(verifier->verify(Sample{p->prompt, p->completion, retort::prompt_line(*p)}).passed);
    retort::sandbox::Job job;
    job.language = "python";
    job.source = found[0].code;
    runs.push_back(pool.submit(std::move(job)));
    calls.push_back(found[0]);
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    retort::sandbox::Result r = runs[i].get();
    INFO(sample[i]->id << ":\n" << calls[i].code << "stderr: " << r.stderr_text);
    REQUIRE(r.status == retort::sandbox::Status::Ok);
    CHECK(r.stdout_text == sample[i]->answer + "\n");  // the program, run for real, prints the gold answer
    CHECK(calls[i].body == sample[i]->answer);          // and the trace's observation is that output
  }
}
