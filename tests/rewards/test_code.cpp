// The code verifier: output comparison (unit), stdin/stdout and assert tests in the sandbox,
// the anti-cheating harness, and the HumanEval / MBPP reference solutions (sandbox tier).
#include <catch2/catch.hpp>

#include <fstream>  // defines: std::ifstream
#include <sstream>  // defines: std::ostringstream

#include "rewards/code_verifier.h"  // defines: compare_output, make_code_verifier
#include "rewards/combine.h"        // defines: RewardSet
#include "sandbox/executor.h"       // defines: sandbox::Executor
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

using namespace retort::rewards;
using json = nlohmann::json;

TEST_CASE("compare_output: token-wise, every line, numbers with tolerance", "[unit]") {
  struct Case {
    const char* expected;
    const char* actual;
    bool ok;
  };
  const Case cases[] = {
      {"1 2 3\n", "1 2 3\n", true},
      {"1 2 3", "1  2\t3   \n\n\n", true},          // whitespace runs and trailing blank lines
      {"1\n2\n3\n", "1\n2\n", false},                // a missing last line fails
      {"1\n2\n", "1\n2\n3\n", false},                // an extra line fails
      {"1 2\n", "1\n2\n", false},                    // line structure counts
      {"YES\n", "yes\n", false},                     // case-sensitive
      {"0.333333\n", "0.3333331\n", true},           // non-integers within 1e-6
      {"0.5\n", "0.51\n", false},
      {"1e-9\n", "0\n", true},                       // absolute tolerance near zero
      {"1000000000\n", "1000000001\n", false},       // integers compare exactly
      {"3\n", "3.0\n", false},                       // an expected integer wants an integer
      {"3.0\n", "3\n", true},                        // an expected non-integer takes any number
      {"abc 1.0\n", "abc 1.0000000001\n", true},
      {"\n", "", true},
      {"", "x", false},
      {"1 2 3\r\n4\r\n", "1 2 3\n4\n", true},        // CRLF
  };
  for (const auto& c : cases) {
    INFO("expected: " << c.expected << "| actual: " << c.actual);
    OutputMatch m = compare_output(c.expected, c.actual, 1e-6);
    CHECK(m.ok == c.ok);
    if (!m.ok) CHECK_FALSE(m.why.empty());
  }
}

// Integers compare digit for digit, whatever the tolerance: a program that prints floats must
// not collect the reward of a modular-arithmetic problem (expected 1000000007, printed 1e9).
// Blank lines around the output are ignored as the common judges do (LiveCodeBench,
// SandboxFusion and open-r1 strip the whole output before comparing).
TEST_CASE("compare_output: integers exactly, floats only where the expected token is one", "[unit]") {
  struct Case {
    const char* expected;
    const char* actual;
    bool ok;
  };
  const Case cases[] = {
      {"1000000007\n", "1000000000.0\n", false},    // a float near a modulus
      {"1000000007\n", "1e9\n", false},
      {"998244353\n", "998244000.0\n", false},
      {"998244353\n", "998244353.0\n", false},      // right value, wrong type of token
      {"1000000000\n", "1e9\n", false},             // exponent notation is not an integer
      {"1000000000\n", "1000000000\n", true},
      {"123456789012345678901234567890\n", "123456789012345678901234567891\n", false},  // past double precision
      {"123456789012345678901234567890\n", "123456789012345678901234567890\n", true},
      {"-0\n", "0\n", true},                          // one integer, two spellings
      {"0\n", "-0\n", true},
      {"+5\n", "5\n", true},
      {"5\n", "-5\n", false},
      {"0\n", "1e-12\n", false},                     // an expected integer takes no tolerance
      {"1e9\n", "1000000000\n", true},               // an expected non-integer does
      {"0.5\n", "0x1p-1\n", false},                  // decimal notation only
      {"nan\n", "nan\n", true},                      // text compares as text
      {"inf\n", "1e308\n", false},
      {"8\n", "\n8\n", true},                        // blank lines before the output
      {"8\n", "\n\n  \n8\n\n\n", true},
      {"\n\n8\n", "8", true},                        // ... or before the expected output
      {"1\n\n2\n", "1\n2\n", false},                // blank lines inside still count
      {"1 2 \n3  \n", "1 2\n3\n", true},             // trailing spaces
      {"1 2\r\n3\r\n", "1 2   \r\n3\t\r\n\r\n", true}, // CRLF with trailing spaces
      {"7\r\n", "7\n", true},
      {"7\n", "7\r\r\n", true},
  };
  for (const auto& c : cases) {
    INFO("expected: " << c.expected << "| actual: " << c.actual);
    OutputMatch m = compare_output(c.expected, c.actual, 1e-6);
    CHECK(m.ok == c.ok);
    if (!m.ok) CHECK_FALSE(m.why.empty());
  }
}

namespace {

std::shared_ptr<retort::sandbox::Executor> pool() {
  static std::shared_ptr<retort::sandbox::Executor> ex = [] {
    retort::sandbox::ExecutorConfig cfg;
    cfg.workers = 8;  // jobs mostly wait on process start-up
    return std::make_shared<retort::sandbox::Executor>(cfg);
  }();
  return ex;
}

// A RewardSet with one code verifier sharing the test pool.
std::unique_ptr<RewardSet> code_set(json args = json::object()) {
  RewardsConfig cfg;
  cfg.verifiers = {VerifierSpec{"code", 1.0, std::move(args)}};
  cfg.wait_threads = 48;
  cfg.deadline_s = 600;
  return std::make_unique<RewardSet>(cfg, builtin_registry(), pool());
}

ScoreInput code_input(const std::string& code, json row, const std::string& lang = "python") {
  ScoreInput in;
  in.completion = "<think>plan</think>\n```" + lang + "\n" + code + "\n```\n";
  in.row = std::make_shared<const json>(std::move(row));
  return in;
}

std::vector<json> load_rows(const std::string& name) {
  std::ifstream f(std::string(RETORT_SOURCE_DIR) + "/../shared/data/" + name);
  std::vector<json> rows;
  if (!f) {
    WARN("data file ../shared/data/" << name << " is absent: real-data check skipped");
    return rows;
  }
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) rows.push_back(json::parse(line));
  return rows;
}

}  // namespace

TEST_CASE("code: stdin/stdout tests, formats, rewards and the failure detail", "[sandbox]") {
  json io = {{"tests", {{{"input", "1 2\n"}, {"output", "3\n"}}, {{"input", "5 7\n"}, {"output", "12\n"}},
                        {{"input", "10 -4\n"}, {"output", "6\n"}}}}};
  json contests = {{"tests", {{"inputs", {"1 2\n", "5 7\n"}}, {"outputs", {"3\n", "12\n"}}}}};
  json as_string = {{"tests", io["tests"].dump()}};
  const std::string add = "a, b = map(int, input().split())\nprint(a + b)";
  const std::string add_cpp = "#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a+b<<\"\\n\";}";
  const std::string wrong_last = "a, b = map(int, input().split())\nprint(a + b if a < 10 else 0)";
  const std::string crash = "raise SystemExit(3)";
  const std::string hang = "while True: pass";
  auto set = code_set({{"limits", {{"wall_s", 2}, {"cpu_s", 2}}}, {"language", "auto"}});
  std::vector<ScoreInput> in = {code_input(add, io),          code_input(add, contests), code_input(add, as_string),
                                code_input(add_cpp, io, "cpp"), code_input(wrong_last, io), code_input(crash, io),
                                code_input(hang, io)};
  in.push_back(ScoreInput{"", "no code here", std::make_shared<const json>(io)});
  RewardTable t = set->score(in);
  CHECK(t.reward(0, 0) == 1.0);
  CHECK(t.reward(1, 0) == 1.0);
  CHECK(t.reward(2, 0) == 1.0);
  CHECK(t.reward(3, 0) == 1.0);
  CHECK(t.detail(3, 0)["language"] == "cpp");
  CHECK(t.reward(4, 0) == Approx(2.0 / 3.0));
  const json& f = t.detail(4, 0)["first_failure"];
  CHECK(f["index"] == 2);
  CHECK(f["input"] == "10 -4\n");
  CHECK(f["expected"] == "6\n");
  CHECK(f["actual"] == "0\n");
  CHECK(f["status"] == "ok");
  CHECK(t.reward(5, 0) == 0.0);
  CHECK(t.detail(5, 0)["first_failure"]["status"] == "runtime_error");
  CHECK(t.reward(6, 0) == 0.0);
  CHECK(t.detail(6, 0)["first_failure"]["status"] == "time_limit");
  CHECK(t.reward(7, 0) == 0.0);  // prose is not a program: it fails to run
  // All-or-nothing and stop-at-first-failure.
  auto strict = code_set({{"reward", "all_or_nothing"}, {"stop_at_first_failure", true}});
  RewardTable s = strict->score({code_input(wrong_last, io), code_input(add, io)});
  CHECK(s.reward(0, 0) == 0.0);
  CHECK(s.detail(0, 0)["passed"] == 2);
  CHECK(s.reward(1, 0) == 1.0);
  // Rows without tests: not applicable.
  RewardTable na = set->score({code_input(add, {{"answer", "3"}})});
  CHECK(std::isnan(na.reward(0, 0)));
}

// The result cache (code_verifier.h, `cache`): a program that prints 64 random bits shows
// whether a verdict came from a run of its own. Expected: the same bits for the same job
// (across score calls, and for two samples scored at once), new bits for another input or
// another program, and new bits on every call with the cache off.
TEST_CASE("code: an identical stdin/stdout job reuses its result; another input, program or cache off runs", "[sandbox]") {
  const std::string rnd = "import os\nprint(os.urandom(8).hex())";
  const std::string rnd2 = "import os\nprint(os.urandom(8).hex())  # another program";
  auto row = [](const char* input) { return json{{"tests", {{{"input", input}, {"output", "never\n"}}}}}; };
  auto actual = [](const RewardTable& t, size_t i) {
    const json& f = t.detail(i, 0)["first_failure"];
    REQUIRE(f["status"] == "ok");  // it ran, printed and was judged a wrong answer
    std::string a = f["actual"];
    REQUIRE(a.size() == 17);       // 16 hex digits and the newline
    return a;
  };
  auto cached = code_set();
  RewardTable a = cached->score({code_input(rnd, row("1\n")), code_input(rnd, row("1\n")), code_input(rnd, row("2\n")),
                                 code_input(rnd2, row("1\n"))});
  RewardTable b = cached->score({code_input(rnd, row("1\n"))});
  CHECK(actual(a, 0) == actual(a, 1));  // two samples of one job in one call
  CHECK(actual(b, 0) == actual(a, 0));  // a later call
  CHECK(actual(a, 2) != actual(a, 0));  // another input
  CHECK(actual(a, 3) != actual(a, 0));  // another program
  auto uncached = code_set({{"cache", false}});
  RewardTable c = uncached->score({code_input(rnd, row("1\n")), code_input(rnd, row("1\n"))});
  RewardTable d = uncached->score({code_input(rnd, row("1\n"))});
  CHECK(actual(c, 0) != actual(c, 1));
  CHECK(actual(d, 0) != actual(c, 0));
  CHECK(actual(d, 0) != actual(a, 0));  // a new verifier has its own cache
}

TEST_CASE("code: the assert harness proves every test ran; cheats fail", "[sandbox]") {
  json row = {{"prompt", "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n"},
              {"entry_point", "add"},
              {"test", "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert abs(candidate(-5, 5) - 0) < 1e-9\n"
                       "    assert candidate(10**20, 1) == 10**20 + 1\n"}};
  json mbpp = {{"test_list", {"assert add(1, 2) == 3", "assert abs(add(-5, 5) - 0) < 1e-9", "assert add(2, 2) == 4"}},
               {"test_setup_code", ""}};
  struct Case {
    const char* name;
    const char* code;
    bool passes;
  };
  const Case cases[] = {
      {"correct", "def add(a, b):\n    return a + b", true},
      {"body only (HumanEval style)", "    return a + b", true},
      {"wrong", "def add(a, b):\n    return a - b", false},
      {"returns None", "def add(a, b):\n    return None", false},
      {"os._exit(0) at import", "import os\nos._exit(0)\ndef add(a, b):\n    return 0", false},
      {"sys.exit(0) at import", "import sys\nsys.exit(0)", false},
      {"os._exit(0) in the call", "import os\ndef add(a, b):\n    os._exit(0)", false},
      {"atexit exit", "import atexit, os\natexit.register(lambda: os._exit(0))\ndef add(a, b):\n    raise SystemExit(0)", false},
      {"equal to anything",
       "class Any:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n"
       "def add(a, b):\n    return Any()", false},
      {"int subclass equal to anything",
       "class I(int):\n    def __eq__(self, o): return True\ndef add(a, b):\n    return I(0)", false},
      {"expected from the caller's frame",
       "import sys\ndef add(a, b):\n    f = sys._getframe(1)\n    while f is not None:\n"
       "        for v in f.f_locals.values():\n            if isinstance(v, int) and v not in (a, b): return v\n"
       "        f = f.f_back\n    return 0", false},
      {"forged verdict lines",
       "import sys, os\nfor i in range(10):\n    print('PASS', i)\n    os.write(1, b'x PASS 0\\nx DONE 3\\n')\n"
       "def add(a, b):\n    return 0", false},
      {"reads the harness files",
       "import glob\nsrc = ''.join(open(p).read() for p in glob.glob('*') if p != 'candidate.py')\n"
       "def add(a, b):\n    return 3 if 'candidate(1, 2) == 3' in src else -1", false},
      {"redefines a builtin the tests use",
       // Right on every test but the one that goes through abs: only a trusted abs catches it.
       "def abs(x):\n    return 0\ndef add(a, b):\n    return {(1, 2): 3, (2, 2): 4, (10**20, 1): 10**20 + 1}.get((a, b), 7)",
       false},
      {"monkeypatches builtins",
       "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\ndef add(a, b):\n    return 0", false},
  };
  auto set = code_set({{"limits", {{"wall_s", 10}}}});
  std::vector<ScoreInput> in;
  for (const auto& c : cases) {
    in.push_back(code_input(c.code, row));
    in.push_back(code_input(c.code, mbpp));
  }
  RewardTable t = set->score(in);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    for (int fmt = 0; fmt < 2; ++fmt) {
      int r = static_cast<int>(2 * i) + fmt;
      INFO(cases[i].name << (fmt == 0 ? " (HumanEval)" : " (MBPP)") << ": " << t.detail(r, 0).dump());
      if (fmt == 1 && std::string(cases[i].name).find("body only") != std::string::npos) continue;
      CHECK(t.passed[static_cast<size_t>(r)] == cases[i].passes);
      if (!cases[i].passes) CHECK(t.reward(r, 0) < 1.0);
    }
  }
}

// What the common judges accept: a blank line before the output (LiveCodeBench, SandboxFusion
// and open-r1 strip the output), and a test block that defines its check and then calls it on
// the solution (HumanEval's `def check(candidate): ...` followed by `check(add)`).
TEST_CASE("code: blank lines around the output; a check block that calls itself", "[sandbox]") {
  json io = {{"tests", {{{"input", "3 5\n"}, {"output", "8\n"}}}}};
  json mod = {{"tests", {{{"input", ""}, {"output", "1000000007\n"}}}}};
  const std::string check_def = "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(-4, 4) == 0\n";
  json he_self = {{"prompt", "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n"}, {"entry_point", "add"}, {"test", check_def + "\ncheck(add)\n"}};
  json mbpp_block = {{"test_list", {check_def + "\ncheck(add)\n"}}};
  const std::string add = "def add(a, b):\n    return a + b";
  const std::string sub = "def add(a, b):\n    return a - b";
  auto set = code_set({{"limits", {{"wall_s", 10}}}});
  RewardTable t = set->score({
      code_input("a, b = map(int, input().split())\nprint()\nprint(a + b)\nprint()", io),  // 0: passes
      code_input("a, b = map(int, input().split())\nprint(float(a + b))", io),              // 1: 8.0 is not 8
      code_input("print(1e9)", mod),                                                        // 2: 1000000000.0
      code_input("print(10**9 + 7)", mod),                                                  // 3: passes
      code_input(add, he_self),                                                             // 4: passes
      code_input(sub, he_self),                                                             // 5: fails
      code_input(add, mbpp_block),                                                          // 6: passes
      code_input(sub, mbpp_block),                                                          // 7: fails
  });
  const bool want[] = {true, false, false, true, true, false, true, false};
  for (size_t i = 0; i < 8; ++i) {
    INFO("row " << i << ": " << t.detail(i, 0).dump());
    CHECK(t.passed[i] == want[i]);
    CHECK(t.reward(i, 0) == (want[i] ? 1.0 : 0.0));
  }
  CHECK(t.detail(4, 0)["tests"] == 1);  // one block, one verdict
}

namespace {

// Runs every row through the code verifier; returns the indices that did not pass, with
// the detail.
std::vector<std::pair<size_t, json>> failures(const std::vector<json>& rows, const std::vector<std::string>& codes,
                                              bool want_pass) {
  auto set = code_set({{"limits", {{"wall_s", 20}, {"cpu_s", 20}}}});
  std::vector<ScoreInput> in;
  for (size_t i = 0; i < rows.size(); ++i) in.push_back(code_input(codes[i], rows[i]));
  RewardTable t = set->score(in);
  std::vector<std::pair<size_t, json>> out;
  for (size_t i = 0; i < rows.size(); ++i)
    if (static_cast<bool>(t.passed[i]) != want_pass) out.emplace_back(i, t.detail(static_cast<int>(i), 0));
  return out;
}

std::string list(const std::vector<json>& rows, const std::vector<std::pair<size_t, json>>& f) {
  std::ostringstream s;
  for (const auto& e : f) s << rows[e.first]["task_id"] << ": " << e.second.dump() << "\n";
  return s.str();
}

}  // namespace

TEST_CASE("code: all 164 HumanEval canonical solutions pass; return None and a wrong constant fail", "[sandbox]") {
  auto rows = load_rows("humaneval.jsonl");
  if (rows.empty()) return;
  REQUIRE(rows.size() == 164);
  std::vector<std::string> good;
  for (const auto& r : rows) good.push_back(r["prompt"].get<std::string>() + r["canonical_solution"].get<std::string>());
  auto bad_good = failures(rows, good, true);
  INFO(list(rows, bad_good));
  CHECK(bad_good.empty());
  // Broken bodies: every second problem with `return None`, the others with a constant.
  std::vector<std::string> broken;
  for (size_t i = 0; i < rows.size(); ++i)
    broken.push_back(rows[i]["prompt"].get<std::string>() + (i % 2 ? "    return None\n" : "    return 0\n"));
  auto passed_broken = failures(rows, broken, false);
  INFO(list(rows, passed_broken));
  CHECK(passed_broken.empty());
}

TEST_CASE("code: at least 99% of MBPP reference solutions pass; broken ones fail", "[sandbox]") {
  auto rows = load_rows("mbpp.jsonl");
  if (rows.empty()) return;
  std::vector<std::string> good;
  for (const auto& r : rows) good.push_back(r["code"]);
  auto bad = failures(rows, good, true);
  std::ostringstream s;
  s << bad.size() << " of " << rows.size() << " MBPP reference solutions fail:\n" << list(rows, bad);
  WARN(s.str());
  CHECK(bad.size() * 100 <= rows.size());
  // The reference with its function replaced: `return None` (every 8th task, to bound the time).
  std::vector<json> some;
  std::vector<std::string> broken;
  for (size_t i = 0; i < rows.size(); i += 8) {
    std::string first = rows[i]["test_list"][0];
    size_t a = first.find("assert") + 6;
    while (a < first.size() && first[a] == ' ') ++a;
    size_t b = first.find('(', a);
    std::string name = first.substr(a, b - a);
    if (name.empty() || name.find_first_of(" =.[") != std::string::npos) continue;  // not a plain call
    some.push_back(rows[i]);
    broken.push_back(rows[i]["code"].get<std::string>() + "\n\ndef " + name + "(*args, **kwargs):\n    return None\n");
  }
  auto passed_broken = failures(some, broken, false);
  INFO(list(some, passed_broken));
  CHECK(passed_broken.empty());
  CHECK(some.size() > 100);
}
