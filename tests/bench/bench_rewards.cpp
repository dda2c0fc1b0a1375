// Math verifier throughput on MATH-500 pairs, per core (one thread), next to a sympy-based
// Python grader on the same pairs, measured in one run.
//
//   bench_rewards [seconds_per_measurement=2]
//
// Pairs: each problem's gold `answer` against the last \boxed{} of its own `solution` (500
// pairs, all equivalent, most written identically), and against the gold answer of the next
// problem (500 pairs, mostly different: these always reach the parser). Rows:
//   answers_equivalent     the verifier's comparison (string fast path when identical)
//   parse + compare        both sides parsed and compared structurally, no string shortcut
//   full verifier          the Verifier on the whole solution text as the completion (extraction included)
//   sympy grader (Python)  parse both sides with sympy and test simplify(a - b) == 0
#include <chrono>    // defines: std::chrono::steady_clock
#include <unistd.h>  // defines: getpid

#include <cstdio>    // defines: std::printf, popen
#include <cstdlib>   // defines: std::atof
#include <fstream>   // defines: std::ifstream
#include <string>    // defines: std::string
#include <vector>    // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "rewards/extract.h"         // defines: last_boxed
#include "rewards/math/equiv.h"      // defines: answers_equivalent, nodes_equivalent
#include "rewards/math/normalize.h"  // defines: normalize_answer
#include "rewards/math_verifier.h"   // defines: make_math_verifier

using namespace retort::rewards;
using json = nlohmann::json;

namespace {

struct Pair {
  std::string gold, candidate;
};

// Runs `fn` over `pairs` round-robin for at least `seconds`; returns calls per second.
template <class Fn>
double rate(const std::vector<Pair>& pairs, double seconds, Fn fn, int* agree) {
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  long calls = 0;
  int ok = 0;
  double elapsed = 0;
  do {
    for (const auto& p : pairs) ok += fn(p) ? 1 : 0;
    calls += static_cast<long>(pairs.size());
    elapsed = std::chrono::duration<double>(clock::now() - t0).count();
  } while (elapsed < seconds);
  *agree = static_cast<int>(ok / (calls / static_cast<long>(pairs.size())));
  return static_cast<double>(calls) / elapsed;
}

// The Python comparison: a typical sympy grader (LaTeX rewritten to sympy syntax, both
// sides parsed, simplify of the difference). Prints "<pairs/s> <equal count>".
const char* kSympyGrader = R"PY(
import json, re, sys, time
import sympy
from sympy.parsing.sympy_parser import parse_expr, standard_transformations, implicit_multiplication_application, convert_xor
T = standard_transformations + (implicit_multiplication_application, convert_xor)
def to_sympy(s):
    s = s.replace("\\left", "").replace("\\right", "").replace("\\dfrac", "\\frac").replace("\\!", "").replace("$", "")
    s = re.sub(r"\^\{?\\circ\}?", "", s)
    for _ in range(8):
        s = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", s)
        s = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", s)
    s = re.sub(r"\\frac(\d)(\d)", r"(\1/\2)", s)
    s = s.replace("\\pi", "pi").replace("\\cdot", "*").replace("\\times", "*").replace("{", "(").replace("}", ")")
    s = s.replace("\\", "")
    return parse_expr(s, transformations=T)
def equal(a, b):
    try:
        return sympy.simplify(to_sympy(a) - to_sympy(b)) == 0
    except Exception:
        return a.strip() == b.strip()
pairs = [json.loads(l) for l in sys.stdin]
seconds = float(sys.argv[1])
t0 = time.perf_counter(); n = 0; ok = 0
while True:
    for g, c in pairs:
        ok += bool(equal(g, c)); n += 1
    if time.perf_counter() - t0 >= seconds:
        break
print(n / (time.perf_counter() - t0), ok // (n // len(pairs)))
)PY";

}  // namespace

int main(int argc, char** argv) {
  double seconds = argc > 1 ? std::atof(argv[1]) : 2.0;
  std::string path = std::string(RETORT_SOURCE_DIR) + "/../shared/data/math500.jsonl";
  std::ifstream f(path);
  if (!f) {
    std::fprintf(stderr, "bench_rewards: %s is absent\n", path.c_str());
    return 1;
  }
  std::vector<Pair> same, other;
  std::vector<std::string> solutions, answers;
  std::string line;
  while (std::getline(f, line)) {
    json r = json::parse(line);
    answers.push_back(r["answer"]);
    solutions.push_back(r["solution"]);
    same.push_back({r["answer"], last_boxed(r["solution"].get<std::string>()).value_or("")});
  }
  for (size_t i = 0; i < answers.size(); ++i) other.push_back({answers[i], answers[(i + 1) % answers.size()]});

  std::printf("retort math verifier, MATH-500 pairs, one thread (per core), %.0f s per row\n", seconds);
  int agree = 0;
  double r1 = rate(same, seconds, [](const Pair& p) { return math::answers_equivalent(p.gold, p.candidate).equal; }, &agree);
  std::printf("  %-44s %10.0f verifications/s  (%d/500 equal)\n", "answers_equivalent, gold vs own boxed", r1, agree);
  double r2 = rate(other, seconds, [](const Pair& p) { return math::answers_equivalent(p.gold, p.candidate).equal; }, &agree);
  std::printf("  %-44s %10.0f verifications/s  (%d/500 equal)\n", "answers_equivalent, gold vs next problem", r2, agree);
  math::EquivOptions opt;
  double r3 = rate(same, seconds, [&](const Pair& p) {
    auto a = math::parse_answer(math::normalize_answer(p.gold));
    auto b = math::parse_answer(math::normalize_answer(p.candidate));
    return a.node && b.node && math::nodes_equivalent(*a.node, *b.node, opt);
  }, &agree);
  std::printf("  %-44s %10.0f verifications/s  (%d/500 equal)\n", "parse + compare (no string shortcut)", r3, agree);
  auto verifier = make_math_verifier(MathVerifierOptions{});
  std::vector<Pair> full;
  for (size_t i = 0; i < answers.size(); ++i) full.push_back({answers[i], solutions[i]});
  double r4 = rate(full, seconds, [&](const Pair& p) {
    json row = {{"answer", p.gold}};
    return verifier->verify(Sample{"", p.candidate, row}).passed;
  }, &agree);
  std::printf("  %-44s %10.0f verifications/s  (%d/500 passed)\n", "full verifier on whole solutions", r4, agree);

  // The sympy comparison, same pairs, same run.
  std::string tmp = "/tmp/bench_rewards_pairs_" + std::to_string(getpid()) + ".jsonl";
  std::string script = "/tmp/bench_rewards_sympy_" + std::to_string(getpid()) + ".py";
  {
    std::ofstream p(tmp);
    for (const auto& pr : same) p << json::array({pr.gold, pr.candidate}).dump() << "\n";
    std::ofstream s(script);
    s << kSympyGrader;
  }
  std::string cmd = "python3 " + script + " " + std::to_string(seconds * 5) + " < " + tmp + " 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  double py_rate = 0;
  int py_ok = 0;
  if (pipe && std::fscanf(pipe, "%lf %d", &py_rate, &py_ok) == 2) {
    std::printf("  %-44s %10.0f verifications/s  (%d/500 equal)\n", "sympy grader (Python), gold vs own boxed", py_rate, py_ok);
    std::printf("speed-up of answers_equivalent over the sympy grader: %.0fx (target: >= 20000/s per core)\n", r1 / py_rate);
  } else {
    std::printf("  sympy grader (Python): skipped (python3 with sympy not available)\n");
  }
  if (pipe) pclose(pipe);
  std::remove(tmp.c_str());
  std::remove(script.c_str());
  return 0;
}
