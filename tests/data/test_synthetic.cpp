// The synthetic teacher: determinism (same seed, same bytes), counts, splits disjoint by
// text and by canonical form, the difficulty knob, the arithmetic of every math trace, the
// shape of code tasks, the files read back by the trace and prompt loaders, and option
// errors. Grading by the project's verifiers and running the programs in the sandbox are in
// tests/rewards/test_synthetic_grading.cpp (this module links retort_common only).
#include <catch2/catch.hpp>

#include <filesystem>  // defines: std::filesystem
#include <fstream>     // defines: std::ifstream
#include <map>         // defines: std::map
#include <set>         // defines: std::set
#include <sstream>     // defines: std::ostringstream

#include "common/config.h"  // defines: parse_config, config_to_json
#include "common/error.h"   // defines: retort::Error
#include "data/prompts.h"   // defines: load_prompts
#include "data/synthetic.h"
#include "data/traces.h"    // defines: load_traces
#include "tokenizer/text_io.h"  // defines: read_training_texts
#include "jsonl_files.h"  // defines: read_text
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace fs = std::filesystem;
using nlohmann::json;
using retort::SyntheticData;
using retort::SyntheticOptions;
using retort::SyntheticProblem;

namespace {

// Small enough to generate in milliseconds, large enough that every split draws forms of
// every step count it allows.
SyntheticOptions small_options(int64_t seed) {
  SyntheticOptions o;
  o.seed = seed;
  o.train.math = 300, o.train.code = 150;
  o.valid.math = 30, o.valid.code = 15;
  o.rl.math = 60, o.rl.code = 30;
  o.eval.math = 50, o.eval.code = 25;
  return o;
}

std::string out_dir(const std::string& name) {
  std::string dir = std::string(RETORT_BINARY_DIR) + "/test_synthetic/" + name;
  fs::remove_all(dir);
  return dir;
}

const std::vector<std::string> kFiles = {"traces.train.jsonl", "traces.valid.jsonl", "rl.math.jsonl",
                                         "rl.code.jsonl",      "eval.math.jsonl",    "eval.code.jsonl",
                                         "tokenizer.jsonl"};

std::map<std::string, std::vector<const SyntheticProblem*>> by_split(const SyntheticData& d) {
  std::map<std::string, std::vector<const SyntheticProblem*>> m;
  for (const auto* v : {&d.train, &d.valid, &d.rl_math, &d.rl_code, &d.eval_math, &d.eval_code})
    for (const auto& p : *v) m[p.split].push_back(&p);
  return m;
}

// The text between "<think>\n" and "\n</think>\n".
std::string reasoning_of(const std::string& completion) {
  size_t a = completion.find("<think>\n"), b = completion.find("\n</think>\n");
  REQUIRE(a == 0);
  REQUIRE(b != std::string::npos);
  return completion.substr(8, b - 8);
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// The content of the last \boxed{...}, by brace matching (an independent reading of what the
// math verifier extracts).
std::string last_boxed(const std::string& s) {
  size_t at = s.rfind("\\boxed{");
  if (at == std::string::npos) return "";
  int depth = 1;
  for (size_t i = at + 7; i < s.size(); ++i) {
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return s.substr(at + 7, i - at - 7);
  }
  return "";
}

}  // namespace

TEST_CASE("synthetic data: the same seed gives the same bytes, another seed other bytes", "[unit]") {
  std::string a = out_dir("seed_a"), b = out_dir("seed_b"), c = out_dir("seed_c");
  retort::write_synthetic(retort::generate_synthetic(small_options(7)), a);
  retort::write_synthetic(retort::generate_synthetic(small_options(7)), b);
  retort::write_synthetic(retort::generate_synthetic(small_options(8)), c);
  for (const auto& f : kFiles) {
    INFO(f);
    std::string fa = read_text(a + "/" + f);
    REQUIRE_FALSE(fa.empty());
    CHECK(fa == read_text(b + "/" + f));
    CHECK(fa != read_text(c + "/" + f));
  }
}

TEST_CASE("synthetic data: counts as configured, and the files load as traces and prompts", "[unit]") {
  SyntheticOptions o = small_options(3);
  o.valid.code = 0;  // a split may leave a kind out
  SyntheticData d = retort::generate_synthetic(o);
  std::map<std::string, int64_t> count;
  for (const auto* v : {&d.train, &d.valid})
    for (const auto& p : *v) ++count[p.split + "/" + p.kind];
  CHECK(count["train/math"] == o.train.math);
  CHECK(count["train/code"] == o.train.code);
  CHECK(count["valid/math"] == o.valid.math);
  CHECK(count["valid/code"] == 0);
  CHECK(static_cast<int64_t>(d.rl_math.size()) == o.rl.math);
  CHECK(static_cast<int64_t>(d.rl_code.size()) == o.rl.code);
  CHECK(static_cast<int64_t>(d.eval_math.size()) == o.eval.math);
  CHECK(static_cast<int64_t>(d.eval_code.size()) == o.eval.code);

  std::string dir = out_dir("counts");
  retort::SyntheticFiles files = retort::write_synthetic(d, dir);
  auto train = retort::load_traces(files.traces_train);
  REQUIRE(train.size() == d.train.size());
  for (size_t i = 0; i < train.size(); ++i) {
    CHECK(train[i].id == d.train[i].id);
    REQUIRE(train[i].prompt.size() == 1);
    CHECK(train[i].prompt[0].content == d.train[i].prompt);
    CHECK(train[i].completion == d.train[i].completion);
  }
  CHECK(retort::load_traces(files.traces_valid).size() == d.valid.size());
  // The tokenizer trainer's reader takes the corpus: prompt and completion of every trace,
  // and the RL prompts.
  CHECK(retort::read_training_texts(files.tokenizer_corpus).size() ==
        2 * (d.train.size() + d.valid.size()) + d.rl_math.size() + d.rl_code.size());
  // The trace file mixes the kinds (a batch sees both), not math first then code.
  bool mixed = false;
  for (size_t i = 1; i < d.train.size() && !mixed; ++i) mixed = d.train[i].kind == "math" && d.train[i - 1].kind == "code";
  CHECK(mixed);

  struct PromptFile {
    std::string path;
    const std::vector<SyntheticProblem>* problems;
    const char* kind;
  };
  for (const auto& pf : {PromptFile{files.rl_math, &d.rl_math, "math"}, PromptFile{files.rl_code, &d.rl_code, "code_io"},
                         PromptFile{files.eval_math, &d.eval_math, "math"}, PromptFile{files.eval_code, &d.eval_code, "code_io"}}) {
    INFO(pf.path);
    auto rows = retort::load_prompts(pf.path);
    REQUIRE(rows.size() == pf.problems->size());
    for (size_t i = 0; i < rows.size(); ++i) {
      const SyntheticProblem& p = (*pf.problems)[i];
      CHECK(rows[i].kind == pf.kind);
      CHECK(rows[i].id == p.id);
      CHECK(rows[i].question == p.prompt);
      CHECK_FALSE(rows[i].row->contains("completion"));  // prompts never carry the reference trace
      if (p.kind == "math") CHECK(rows[i].gold == p.answer);
    }
  }
}

TEST_CASE("synthetic data: splits are disjoint by problem text and by canonical form", "[unit]") {
  // Larger than small_options: more chances for a collision if ownership were wrong.
  SyntheticOptions o = small_options(11);
  o.train.math = 2000, o.train.code = 800;
  o.rl.min_steps = 1;  // rl and eval now also draw 1-step forms, which train draws most
  o.eval.min_steps = 1;
  SyntheticData d = retort::generate_synthetic(o);
  auto splits = by_split(d);
  REQUIRE(splits.size() == 4);
  std::map<std::string, std::string> text_owner, form_owner;
  std::map<std::string, std::set<std::string>> forms;
  for (const auto& kv : splits) {
    for (const SyntheticProblem* p : kv.second) {
      auto t = text_owner.emplace(p->prompt, kv.first);
      INFO(p->id << ": " << p->prompt);
      CHECK(t.first->second == kv.first);
      auto f = form_owner.emplace(p->canonical, kv.first);
      INFO(p->canonical);
      CHECK(f.first->second == kv.first);
      forms[kv.first].insert(p->canonical);
    }
  }
  // Every split found forms of its own, and held-out prompts are distinct problems.
  for (const auto& kv : forms) CHECK(kv.second.size() > 10);
  std::set<std::string> eval_forms;
  for (const auto* v : {&d.eval_math, &d.eval_code})
    for (const auto& p : *v) CHECK(eval_forms.insert(p.canonical).second);
  // The same canonical form in other words is the same problem: identical prompts have
  // identical forms.
  std::map<std::string, std::string> form_of_text;
  for (const auto& kv : splits)
    for (const SyntheticProblem* p : kv.second) CHECK(form_of_text.emplace(p->prompt, p->canonical).first->second == p->canonical);

  // The tokenizer corpus never sees an evaluation prompt.
  std::string dir = out_dir("disjoint");
  retort::SyntheticFiles files = retort::write_synthetic(d, dir);
  std::set<std::string> corpus;
  std::ifstream f(files.tokenizer_corpus);
  for (std::string l; std::getline(f, l);) corpus.insert(json::parse(l)["text"].get<std::string>());
  CHECK(corpus.count(d.train.front().prompt) == 1);
  for (const auto* v : {&d.eval_math, &d.eval_code})
    for (const auto& p : *v) CHECK(corpus.count(p.prompt) == 0);
}

TEST_CASE("synthetic data: the difficulty knob sets the steps of every problem", "[unit]") {
  SyntheticOptions o = small_options(5);
  o.eval.min_steps = 3, o.eval.max_steps = 4;
  SyntheticData d = retort::generate_synthetic(o);
  std::map<std::string, std::pair<int, int>> range = {{"train", {o.train.min_steps, o.train.max_steps}},
                                                      {"valid", {o.valid.min_steps, o.valid.max_steps}},
                                                      {"rl", {o.rl.min_steps, o.rl.max_steps}},
                                                      {"eval", {o.eval.min_steps, o.eval.max_steps}}};
  std::map<std::string, std::set<int>> seen;
  for (const auto& kv : by_split(d)) {
    for (const SyntheticProblem* p : kv.second) {
      INFO(p->id << ": " << p->completion);
      CHECK(p->steps >= range[p->split].first);
      CHECK(p->steps <= range[p->split].second);
      seen[p->split + "/" + p->kind].insert(p->steps);
      // The trace shows as many worked steps as the problem has: math, one line with " = "
      // per operation; code, one operation per step ("|"-separated in the canonical form,
      // after the input kind and before the list reduction).
      std::vector<std::string> lines = lines_of(reasoning_of(p->completion));
      if (p->kind == "math") {
        int worked = 0;
        for (const auto& l : lines) worked += l.find(" = ") != std::string::npos && l.rfind("Check:", 0) != 0;
        CHECK(worked == p->steps);
      } else {
        int bars = 0;
        for (char c : p->canonical) bars += c == '|';
        bool list = p->canonical.rfind("code:list", 0) == 0;
        CHECK(bars - (list ? 1 : 0) == p->steps);
      }
    }
  }
  // Both ends of each range are drawn.
  CHECK(seen["train/math"] == std::set<int>{1, 2});
  CHECK(seen["eval/math"] == std::set<int>{3, 4});
  CHECK(seen["eval/code"] == std::set<int>{3, 4});
  // Larger operands give larger numbers.
  SyntheticOptions big = small_options(5);
  big.train.max_operand = 40, big.train.max_value = 1000;
  auto max_answer = [](const SyntheticData& x) {
    int64_t m = 0;
    for (const auto& p : x.train)
      if (p.kind == "math") m = std::max<int64_t>(m, std::stoll(p.answer));
    return m;
  };
  CHECK(max_answer(d) <= o.train.max_value);
  CHECK(max_answer(retort::generate_synthetic(big)) > o.train.max_value);
}

TEST_CASE("synthetic math: every worked step is right and the boxed answer is the row's answer", "[unit]") {
  SyntheticData d = retort::generate_synthetic(small_options(9));
  int checked = 0;
  for (const auto* v : {&d.train, &d.valid, &d.rl_math, &d.eval_math}) {
    for (const auto& p : *v) {
      if (p.kind != "math") continue;
      INFO(p.id << ": " << p.prompt << "\n" << p.completion);
      // R1 layout: think block, then the answer sentence.
      std::string tail = p.completion.substr(p.completion.find("\n</think>\n") + 10);
      CHECK(tail == "The answer is \\boxed{" + p.answer + "}.");
      CHECK(last_boxed(p.completion) == p.answer);
      std::vector<std::string> lines = lines_of(reasoning_of(p.completion));
      REQUIRE(lines.size() >= 2);
      CHECK(lines.back().rfind("Check: ", 0) == 0);
      // Every "x op y = z" of the reasoning holds; the last one reaches the answer.
      int64_t last = -1;
      for (const auto& l : lines) {
        if (l.rfind("Check:", 0) == 0) continue;
        size_t eq = l.rfind(" = ");
        if (eq == std::string::npos) continue;
        long long x = 0, y = 0, z = 0;
        char op = 0;
        std::string calc = l.substr(l.rfind(": ", eq) + 2);
        REQUIRE(std::sscanf(calc.c_str(), "%lld %c %lld = %lld", &x, &op, &y, &z) == 4);
        long long want = op == '+' ? x + y : op == '-' ? x - y : op == '*' ? x * y : (y != 0 && x % y == 0 ? x / y : -1);
        CHECK(z == want);
        CHECK(z >= 1);
        if (last >= 0) CHECK(x == last);  // each step starts from the previous result
        last = z;
      }
      if (last >= 0) CHECK(std::to_string(last) == p.answer);
      // The check line ends in the answer.
      CHECK(lines.back().substr(lines.back().rfind(" = ") + 3) == p.answer + ".");
      ++checked;
    }
  }
  CHECK(checked > 400);
}

TEST_CASE("synthetic code: the trace holds the reference program and the tests are not constant", "[unit]") {
  SyntheticData d = retort::generate_synthetic(small_options(13));
  int checked = 0;
  std::set<std::string> reductions;
  for (const auto* v : {&d.train, &d.valid, &d.rl_code, &d.eval_code}) {
    for (const auto& p : *v) {
      if (p.kind != "code") continue;
      INFO(p.id << ": " << p.prompt << "\n" << p.completion);
      CHECK(p.completion.rfind("<think>\n", 0) == 0);
      std::string tail = p.completion.substr(p.completion.find("\n</think>\n") + 10);
      CHECK(tail == "```python\n" + p.program + "```");
      CHECK(p.program.find("input()") != std::string::npos);
      CHECK(p.program.find("print(") != std::string::npos);
      REQUIRE(p.tests.is_array());
      CHECK(p.tests.size() >= 3);
      CHECK(p.tests.size() <= 5);
      std::set<std::string> inputs, outputs;
      int empty = 0;
      for (const auto& t : p.tests) {
        inputs.insert(t["input"].get<std::string>());
        outputs.insert(t["output"].get<std::string>());
        CHECK(t["output"].get<std::string>().back() == '\n');
        empty += t["output"] == "\n";
      }
      CHECK(inputs.size() == p.tests.size());
      CHECK(outputs.size() >= 2);  // a program printing a constant must fail some test
      CHECK(empty <= 1);           // a program printing nothing must fail all but one
      // The self-check works the first test and prints its expected output.
      std::string reasoning = reasoning_of(p.completion);
      std::string out = p.tests[0]["output"].get<std::string>();
      out.pop_back();
      if (!out.empty()) CHECK(reasoning.find("prints " + out + ".") != std::string::npos);
      reductions.insert(p.canonical.substr(p.canonical.rfind('|') + 1));
      ++checked;
    }
  }
  CHECK(checked > 200);
  for (const char* r : {"sum", "count", "max", "min", "list"}) CHECK(reductions.count(r) == 1);
}

TEST_CASE("synthetic options: a config section, and errors that name the key", "[unit]") {
  json doc = retort::parse_json_text(
      R"({"seed": 42, "train": {"math": 10, "code": 5, "max_steps": 3}, "eval": {"min_steps": 3, "max_steps": 4}, "tokenizer_corpus": false})",
      "synthetic.json");
  auto o = retort::parse_config<SyntheticOptions>(doc, "synthetic.json");
  CHECK(o.seed == 42);
  CHECK(o.train.math == 10);
  CHECK(o.train.code == 5);
  CHECK(o.train.max_steps == 3);
  CHECK(o.eval.min_steps == 3);
  CHECK_FALSE(o.tokenizer_corpus);
  CHECK(o.valid.math == SyntheticOptions{}.valid.math);  // untouched keys keep their defaults
  auto back = retort::parse_config<SyntheticOptions>(retort::config_to_json(o), "resolved");
  CHECK(retort::config_to_json(back) == retort::config_to_json(o));
  CHECK_THROWS_WITH(retort::parse_config<SyntheticOptions>(retort::parse_json_text(R"({"train": {"maths": 3}})", "x"), "x"),
                    Catch::Contains("maths"));

  struct Bad {
    const char* what;
    void (*edit)(SyntheticOptions&);
    const char* message;
  };
  const Bad cases[] = {
      {"negative count", [](SyntheticOptions& o) { o.rl.code = -1; }, "negative"},
      {"min above max", [](SyntheticOptions& o) { o.eval.min_steps = 3, o.eval.max_steps = 2; }, "step range"},
      {"zero steps", [](SyntheticOptions& o) { o.train.min_steps = 0; }, "step range"},
      {"tiny operand", [](SyntheticOptions& o) { o.valid.max_operand = 1; }, "max_operand"},
      {"value below operand", [](SyntheticOptions& o) { o.train.max_value = 10, o.train.max_operand = 9; }, "max_value"},
      // 1-step math with operands up to 2 has a few dozen forms: 5000 distinct eval prompts do not exist.
      {"space too small", [](SyntheticOptions& o) { o.eval.math = 5000, o.eval.min_steps = 1, o.eval.max_steps = 1, o.eval.max_operand = 2, o.eval.max_value = 10; },
       "cannot find enough"},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    SyntheticOptions o = small_options(1);
    c.edit(o);
    std::string message;
    try {
      retort::generate_synthetic(o);
    } catch (const retort::Error& e) {
      message = e.what();
    }
    CHECK_THAT(message, Catch::Contains(c.message));
  }
}
