// The "tool" verifier (rewards/tool_verifier.h) on hand-written chains in both formats. Each
// chain is typed out as the engine writes it (tool_calls.h's delimiters); each expected reward is
// computed in the test from the args it passes and the statuses it wrote, per the formula in
// tool_verifier.h.
#include <catch2/catch.hpp>

#include <cmath>   // defines: std::isnan
#include <string>  // defines: std::string

#include "error_of.h"              // defines: error_of
#include "rewards/verifier.h"      // defines: builtin_registry, Sample, Score

using namespace retort::rewards;
using json = nlohmann::json;

namespace {

// One python-format call and its observation, as the engine appends them.
std::string py_call(const std::string& code, const std::string& body) {
  return "\n```python\n" + code + "\n```\n```output\n" + body + "\n```\n";
}

// One qwen-format call and its observation (Qwen2.5's template for a tool turn).
std::string qwen_call(const std::string& code_json_escaped, const std::string& body) {
  return "<tool_call>\n{\"name\": \"python\", \"arguments\": {\"code\": \"" + code_json_escaped +
         "\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n" + body +
         "\n</tool_response><|im_end|>\n<|im_start|>assistant\n";
}

Score score(const json& args, const std::string& completion) {
  static const Registry registry = builtin_registry();
  auto v = registry.create("tool", args, VerifierContext{});
  static const json kRow = json::object();
  return v->verify(Sample{"<|im_start|>user\nWhat is 123*456?<|im_end|>\n", completion, kRow});
}

// One call of each kind: ok, runtime_error, time_limit, budget.
const std::string kMixed =
    "<think>\nLet me compute." + py_call("print(123*456)", "56088") + "Now a bad idea." +
    py_call("print(1/0)",
            "Traceback (most recent call last):\n  File \"main.py\", line 1\nZeroDivisionError: division by zero\n"
            "[runtime_error: exit code 1]") +
    "And a loop." + py_call("while True:\n    pass", "[time_limit: wall 5 s]") + "Once more." +
    py_call("print(56088)", "[budget: 3 calls per chain]") + "So the product is 56088.\n</think>\n\\boxed{56088}";

}  // namespace

TEST_CASE("tool verifier: penalties and bonus from the args, python format", "[unit]") {
  struct Case {
    const char* name;
    json args;
    double expected;
  };
  // kMixed: n_ok 1, n_failed 1, n_timeout 1, n_budget 1.
  const Case cases[] = {
      // Defaults: no bonus, -0.1 per failure of each kind.
      {"defaults", json::object(), 0.0 * 1 + (-0.1) * 1 + (-0.1) * 1 + (-0.1) * 1},
      {"custom", {{"reward_per_call", 0.2}, {"penalty_failed", -0.5}, {"penalty_timeout", -0.25}, {"penalty_budget", 0.0}},
       0.2 * 1 - 0.5 * 1 - 0.25 * 1 + 0.0},
      // The floor: -0.5 - 0.25 - 0.3 = -1.05, floored at -0.6.
      {"floor", {{"penalty_failed", -0.5}, {"penalty_timeout", -0.25}, {"penalty_budget", -0.3}, {"min_reward", -0.6}}, -0.6},
      {"no penalties", {{"penalty_failed", 0}, {"penalty_timeout", 0}, {"penalty_budget", 0}, {"reward_per_call", 0.1}}, 0.1},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    Score s = score(c.args, kMixed);
    CHECK(s.reward == Approx(c.expected).margin(1e-12));
    CHECK_FALSE(s.passed);
    CHECK(s.detail["calls"] == 4);
    CHECK(s.detail["ok"] == 1);
    CHECK(s.detail["failed"] == 1);
    CHECK(s.detail["timed_out"] == 1);
    CHECK(s.detail["over_budget"] == 1);
    CHECK(s.detail["statuses"] == json({"ok", "runtime_error", "time_limit", "budget"}));
    // The first call that counts against the chain is the second one.
    CHECK(s.detail["first_failed_call"]["call"] == 2);
    CHECK(s.detail["first_failed_call"]["status"] == "runtime_error");
    CHECK(s.detail["first_failed_call"]["code"] == "print(1/0)");
    CHECK(s.detail["first_failed_call"]["observation"].get<std::string>().find("ZeroDivisionError") != std::string::npos);
    CHECK(s.detail["error"] == "runtime_error: call 2 of 4");
  }
}

TEST_CASE("tool verifier: the bonus is capped at max_rewarded_calls", "[unit]") {
  const std::string three_ok = "<think>\nStep." + py_call("print(2+2)", "4") + py_call("print(3*3)", "9") +
                               py_call("for i in range(3):\n    print(i)", "0\n1\n2") + "\n</think>\n\\boxed{9}";
  Score capped = score({{"reward_per_call", 0.1}, {"max_rewarded_calls", 2}}, three_ok);
  CHECK(capped.reward == Approx(0.1 * 2));
  CHECK(capped.passed);
  CHECK(capped.detail["rewarded_calls"] == 2);
  CHECK_FALSE(capped.detail.contains("error"));
  Score uncapped = score({{"reward_per_call", 0.1}}, three_ok);  // max_rewarded_calls 0 = no cap
  CHECK(uncapped.reward == Approx(0.1 * 3));
  CHECK(uncapped.detail["ok"] == 3);
}

TEST_CASE("tool verifier: every failure status, sandbox errors and unanswered calls", "[unit]") {
  // memory_limit and output_limit are the program's fault: penalty_failed each.
  const std::string limits = "<think>\nTry." + py_call("x = [0] * 10**10", "[memory_limit: 256 MB]") +
                             py_call("while True: print('y')", "y\ny\n[truncated]\n[output_limit: 1 MB]") +
                             "\n</think>\n\\boxed{0}";
  Score s = score({{"penalty_failed", -0.2}}, limits);
  CHECK(s.reward == Approx(-0.2 * 2));
  CHECK(s.detail["failed"] == 2);
  CHECK(s.detail["truncated_observations"] == 1);
  CHECK(s.detail["statuses"] == json({"memory_limit", "output_limit"}));

  // A sandbox error is the infrastructure's fault, and a call the chain ended on (cut at the
  // length limit) has no observation: neither is rewarded nor penalised, neither fails the chain.
  const std::string infra = "<think>\nTry." + py_call("print(7)", "[sandbox_error: worker lost]") + "Again." +
                            py_call("print(7)", "7") + "Last.\n```python\nprint(8)\n```";
  Score t = score({{"reward_per_call", 0.5}}, infra);
  CHECK(t.reward == Approx(0.5 * 1));
  CHECK(t.passed);
  CHECK(t.detail["calls"] == 3);
  CHECK(t.detail["sandbox_error"] == 1);
  CHECK(t.detail["unanswered"] == 1);
  CHECK(t.detail["statuses"] == json({"sandbox_error", "ok", "unanswered"}));
}

TEST_CASE("tool verifier: chains without calls, code answers after </think>", "[unit]") {
  const std::string plain = "<think>\n123 * 456 = 56088.\n</think>\n\\boxed{56088}";
  Score na = score(json::object(), plain);
  CHECK(std::isnan(na.reward));
  CHECK_FALSE(na.applicable());
  Score zero = score({{"no_calls", "zero"}}, plain);
  CHECK(zero.reward == 0.0);
  CHECK(zero.passed);
  CHECK(zero.detail["calls"] == 0);
  // A fenced python program in the answer is the answer of a code task, not a tool call.
  const std::string code_answer = "<think>\nWrite it.\n</think>\n```python\nprint(input())\n```\n```output\n5\n```\n";
  CHECK(std::isnan(score(json::object(), code_answer).reward));
}

TEST_CASE("tool verifier: qwen format", "[unit]") {
  const std::string chain = "I will compute it." + qwen_call("print(2**10)", "1024") + "Then check the sum." +
                            qwen_call("import time\\ntime.sleep(100)", "[time_limit: wall 5 s]") +
                            "The answer is \\boxed{1024}.";
  Score q = score({{"format", "qwen"}, {"reward_per_call", 0.3}, {"penalty_timeout", -0.4}}, chain);
  CHECK(q.reward == Approx(0.3 * 1 - 0.4 * 1));
  CHECK_FALSE(q.passed);
  CHECK(q.detail["calls"] == 2);
  CHECK(q.detail["timed_out"] == 1);
  CHECK(q.detail["first_failed_call"]["code"] == "import time\ntime.sleep(100)");
  CHECK(q.detail["format"] == "qwen");
  // Read as python format, the chain has no call.
  CHECK(std::isnan(score(json::object(), chain).reward));
}

TEST_CASE("tool verifier: bad args name the key, the value and the range", "[unit]") {
  auto err = [](const json& args) { return error_of([&] { score(args, kMixed); }); };
  std::string e = err({{"penalty_failed", 0.5}});
  CHECK(e.find("penalty_failed") != std::string::npos);
  CHECK(e.find("0.5") != std::string::npos);
  CHECK(e.find("<= 0") != std::string::npos);
  e = err({{"reward_per_call", -1}});
  CHECK(e.find("reward_per_call") != std::string::npos);
  CHECK(e.find(">= 0") != std::string::npos);
  e = err({{"max_rewarded_calls", -2}});
  CHECK(e.find("max_rewarded_calls") != std::string::npos);
  e = err({{"format", "javascript"}});
  CHECK(e.find("format") != std::string::npos);
  CHECK(e.find("javascript") != std::string::npos);
  CHECK(e.find("qwen") != std::string::npos);
  e = err({{"no_calls", "skip"}});
  CHECK(e.find("not_applicable") != std::string::npos);
  e = err({{"penalty_fail", -0.1}});  // a misspelt key
  CHECK(e.find("penalty_fail") != std::string::npos);
  CHECK(e.find("penalty_failed") != std::string::npos);
}
