// The synthetic teacher: templated problems, their R1-style traces, and the split ownership
// that keeps training, RL and evaluation disjoint. Read top-down: random numbers and
// hashing, ownership, math problems, code tasks, the split loop, files.
#include "data/synthetic.h"

#include <algorithm>      // defines: std::min, std::max, std::sort, std::reverse
#include <cstdint>        // defines: uint64_t
#include <filesystem>     // defines: std::filesystem::create_directories
#include <set>            // defines: std::set
#include <string_view>    // defines: std::string_view
#include <utility>        // defines: std::pair

#include "common/config.h"  // defines: ConfigBinder, write_file_atomic
#include "common/error.h"   // defines: retort::Error
#include "common/hash.h"    // defines: fnv1a
#include "rewards/tool_calls.h"  // defines: rewards::render_observation

namespace retort {

using nlohmann::json;

void SyntheticSplitOptions::bind(ConfigBinder& b) {
  b.field("math", math, Range::at_least(0));
  b.field("code", code, Range::at_least(0));
  b.field("min_steps", min_steps, Range::at_least(1));
  b.field("max_steps", max_steps, Range::at_least(1));
  b.field("max_operand", max_operand, Range::at_least(1));
  b.field("max_value", max_value, Range::at_least(1));
}

void SyntheticOptions::bind(ConfigBinder& b) {
  b.field("seed", seed);
  b.field("train", train);
  b.field("valid", valid);
  b.field("rl", rl);
  b.field("eval", eval);
  b.field("tokenizer_corpus", tokenizer_corpus);
  b.choice("tools", tools, {"none", "python"});
}

namespace {

// ---------------------------------------------------------------------------------------
// Random numbers and hashing. Our own generator and range reduction, not <random>'s
// distributions: those are implementation-defined, and the same seed must give the same
// bytes with any standard library.

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  // One independent stream per (seed, name): the eval prompts do not change when the
  // number of training traces does.
  Rng(int64_t seed, std::string_view stream) : state_(static_cast<uint64_t>(seed) ^ fnv1a(stream)) {
    splitmix64(state_);
  }
  // Uniform in [lo, hi] by rejection, so every value is exactly equally likely.
  int64_t uniform(int64_t lo, int64_t hi) {
    uint64_t range = static_cast<uint64_t>(hi - lo) + 1;
    uint64_t limit = UINT64_MAX - UINT64_MAX % range;
    uint64_t x;
    do x = splitmix64(state_);
    while (x >= limit);
    return lo + static_cast<int64_t>(x % range);
  }
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[static_cast<size_t>(uniform(0, static_cast<int64_t>(v.size()) - 1))]; }
  template <class T>
  void shuffle(std::vector<T>& v) {  // Fisher-Yates
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[static_cast<size_t>(uniform(0, static_cast<int64_t>(i) - 1))]);
  }

 private:
  uint64_t state_;
};

// Replaces every "{key}" of `tmpl` by its value.
std::string fill(const std::string& tmpl, const std::vector<std::pair<std::string, std::string>>& vars) {
  std::string out;
  out.reserve(tmpl.size() + 32);
  for (size_t i = 0; i < tmpl.size();) {
    bool replaced = false;
    if (tmpl[i] == '{') {
      for (const auto& kv : vars) {
        if (tmpl.compare(i + 1, kv.first.size(), kv.first) == 0 && i + 1 + kv.first.size() < tmpl.size() &&
            tmpl[i + 1 + kv.first.size()] == '}') {
          out += kv.second;
          i += kv.first.size() + 2;
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) out += tmpl[i++];
  }
  return out;
}

std::string capitalize(std::string s) {
  if (!s.empty() && s[0] >= 'a' && s[0] <= 'z') s[0] = static_cast<char>(s[0] - 'a' + 'A');
  return s;
}

std::string str(int64_t v) { return std::to_string(v); }

// ---------------------------------------------------------------------------------------
// Ownership: each canonical form belongs to exactly one split.

enum class Split { Train, Valid, Rl, Eval };
const char* split_name(Split s) {
  switch (s) {
    case Split::Train: return "train";
    case Split::Valid: return "valid";
    case Split::Rl: return "rl";
    case Split::Eval: return "eval";
  }
  return "?";
}
constexpr Split kSplits[] = {Split::Train, Split::Valid, Split::Rl, Split::Eval};
// Share of the form space each split owns where several could draw a form. Training gets
// most of it so that its traces cover the templates; valid little, as it only measures loss.
constexpr int kSplitShares[] = {70, 5, 12, 13};

const SyntheticSplitOptions& split_options(const SyntheticOptions& o, Split s) {
  switch (s) {
    case Split::Train: return o.train;
    case Split::Valid: return o.valid;
    case Split::Rl: return o.rl;
    case Split::Eval: return o.eval;
  }
  return o.train;
}

int64_t kind_count(const SyntheticSplitOptions& s, bool code) { return code ? s.code : s.math; }

// The owner of a form: among the splits that draw problems of this kind at this step count,
// the one the form's hash falls on, each split covering a range proportional to its share.
// A fixed salt, not the seed, so that owners do not move between datasets.
Split owner_of(const std::string& canonical, bool code, int steps, const SyntheticOptions& o) {
  int total = 0;
  for (size_t i = 0; i < 4; ++i) {
    const auto& s = split_options(o, kSplits[i]);
    if (kind_count(s, code) > 0 && steps >= s.min_steps && steps <= s.max_steps) total += kSplitShares[i];
  }
  uint64_t h = fnv1a("retort.synthetic.owner|" + canonical);
  h ^= h >> 29;  // FNV's low bits mix poorly; fold the high ones in before the modulo
  int at = static_cast<int>(h % static_cast<uint64_t>(std::max(total, 1)));
  for (size_t i = 0; i < 4; ++i) {
    const auto& s = split_options(o, kSplits[i]);
    if (kind_count(s, code) > 0 && steps >= s.min_steps && steps <= s.max_steps) {
      if (at < kSplitShares[i]) return kSplits[i];
      at -= kSplitShares[i];
    }
  }
  return Split::Train;  // unreachable: the drawing split itself is always eligible
}

// The result of one draw: everything a SyntheticProblem holds but its id and split.
struct Draw {
  bool ok = false;  // false: this draw found no valid problem; draw again
  std::string canonical, prompt, completion, answer, program;
  std::string tool_completion;  // math: the trace that computes with a Python call (SyntheticOptions::tools)
  json tests;
};

// ---------------------------------------------------------------------------------------
// Math: a start amount, then operations on it, each one sentence of the problem and one
// line of the reasoning with its intermediate result.

struct Person {
  const char* name;
  const char* subject;  // she / he
  const char* object;   // her / him
};
const std::vector<Person> kPeople = {
    {"Ana", "she", "her"},   {"Ben", "he", "him"},   {"Carla", "she", "her"}, {"David", "he", "him"},
    {"Emma", "she", "her"},  {"Farid", "he", "him"}, {"Grace", "she", "her"}, {"Hugo", "he", "him"},
    {"Iris", "she", "her"},  {"Jonas", "he", "him"}, {"Kim", "she", "her"},   {"Leo", "he", "him"},
};
const std::vector<std::string> kItems = {"apples",  "pencils", "marbles", "stickers", "cookies", "books",
                                         "coins",   "shells",  "stamps",  "cards",    "oranges", "balloons"};

// A sentence of the problem and the matching reasoning line. Keys: {N} name, {P}/{Pc}
// pronoun, {O} object pronoun, {I} items, {x} operand, {v} value before, {r} after,
// {k} operand - 1 (sharing with k friends splits into k + 1 parts).
struct Phrase {
  std::string text;
  std::string reason;
};
const std::vector<Phrase> kStartPlain = {
    {"{N} has {v} {I}.", "{N} starts with {v} {I}."},
    {"{N} collects {v} {I}.", "{N} collects {v} {I}."},
};
const std::vector<Phrase> kStartBoxes = {
    {"{N} has {a} boxes of {b} {I}.", "{N} starts with {a} boxes of {b}: {a} * {b} = {r}."},
    {"{N} buys {a} bags with {b} {I} in each.", "{a} bags of {b}: {a} * {b} = {r}."},
};
const std::vector<Phrase> kAdd = {
    {"{Pc} buys {x} more.", "{Pc} buys {x} more: {v} + {x} = {r}."},
    {"{Pc} finds {x} more.", "{Pc} finds {x} more: {v} + {x} = {r}."},
    {"A friend gives {O} {x} more.", "A friend gives {x} more: {v} + {x} = {r}."},
};
const std::vector<Phrase> kSub = {
    {"{Pc} gives away {x}.", "{Pc} gives away {x}: {v} - {x} = {r}."},
    {"{Pc} loses {x}.", "{Pc} loses {x}: {v} - {x} = {r}."},
    {"{Pc} uses {x} of them.", "{Pc} uses {x}: {v} - {x} = {r}."},
};
const std::vector<Phrase> kMul = {
    {"Then {P} ends up with {x} times as many {I}.", "{x} times as many: {v} * {x} = {r}."},
    {"Then the number of {I} grows {x} times.", "It grows {x} times: {v} * {x} = {r}."},
};
const std::vector<Phrase> kDiv = {
    {"{Pc} splits them into {x} equal groups and keeps one group.", "One of {x} equal groups: {v} / {x} = {r}."},
    {"{Pc} shares them equally with {k} friends and keeps one share.", "Shared by {x} people: {v} / {x} = {r}."},
};
const std::vector<std::string> kQuestions = {"How many {I} does {N} have now?", "How many {I} does {N} have in the end?"};

// One step of the tool-using trace: the reasoning line up to its computation ("She gives
// away 5: 12 - 5 = 7." -> "# She gives away 5") as a comment, then the step as Python.
std::string python_step(const std::string& reason, const std::string& statement) {
  std::string what = reason.substr(0, reason.find(':'));
  if (!what.empty() && what.back() == '.') what.pop_back();
  return "# " + what + "\n" + statement + "\n";
}

Draw draw_math(Rng& rng, const SyntheticSplitOptions& so, int steps) {
  Draw d;
  const Person& who = rng.pick(kPeople);
  const std::string& items = rng.pick(kItems);
  std::vector<std::pair<std::string, std::string>> base = {
      {"N", who.name}, {"P", who.subject}, {"Pc", capitalize(who.subject)}, {"O", who.object}, {"I", items}};
  std::vector<std::string> sentences, reasons;
  std::string canonical = "math:";
  int64_t v = 0;
  int ops = steps;
  std::vector<std::pair<char, int64_t>> chain;  // each operation and its operand, for the check
  std::vector<int64_t> values;                  // the first number, then each operation's result
  std::string program;                          // the same steps as Python, for the tool-using trace

  // Start: a plain amount, or "a boxes of b" (a multiplication, which counts as a step).
  if (steps >= 1 && rng.uniform(0, 2) == 0 && so.max_operand >= 2) {
    int64_t hi = std::min<int64_t>(so.max_operand, so.max_value / 2);
    int64_t a = rng.uniform(2, hi), b = rng.uniform(2, std::min<int64_t>(so.max_operand, so.max_value / a));
    v = a * b;
    const Phrase& ph = rng.pick(kStartBoxes);
    auto vars = base;
    vars.insert(vars.end(), {{"a", str(a)}, {"b", str(b)}, {"r", str(v)}});
    sentences.push_back(fill(ph.text, vars));
    reasons.push_back(fill(ph.reason, vars));
    canonical += str(a) + "x" + str(b);
    program += python_step(reasons.back(), "n = " + str(a) + " * " + str(b));
    chain.push_back({'*', b});
    values = {a, v};
    --ops;
  } else {
    v = rng.uniform(2, std::min<int64_t>(so.max_value, 2 * so.max_operand + 2));
    const Phrase& ph = rng.pick(kStartPlain);
    auto vars = base;
    vars.push_back({"v", str(v)});
    sentences.push_back(fill(ph.text, vars));
    reasons.push_back(fill(ph.reason, vars));
    canonical += str(v);
    program += python_step(reasons.back(), "n = " + str(v));
    values = {v};
  }

  for (int i = 0; i < ops; ++i) {
    // Operations that keep every intermediate result in [1, max_value] and division exact.
    std::vector<char> feasible;
    if (v + 1 <= so.max_value) feasible.push_back('+');
    if (v >= 2) feasible.push_back('-');
    int64_t mul_hi = std::min<int64_t>({so.max_operand, 5, so.max_value / std::max<int64_t>(v, 1)});
    if (mul_hi >= 2) feasible.push_back('*');
    std::vector<int64_t> divisors;
    for (int64_t x = 2; x <= std::min<int64_t>(so.max_operand, v); ++x)
      if (v % x == 0) divisors.push_back(x);
    if (!divisors.empty()) feasible.push_back('/');
    if (feasible.empty()) return d;
    char op = rng.pick(feasible);
    int64_t x = 0, r = 0;
    const std::vector<Phrase>* phrases = nullptr;
    switch (op) {
      case '+': x = rng.uniform(1, std::min<int64_t>(so.max_operand, so.max_value - v)); r = v + x; phrases = &kAdd; break;
      case '-': x = rng.uniform(1, std::min<int64_t>(so.max_operand, v - 1)); r = v - x; phrases = &kSub; break;
      case '*': x = rng.uniform(2, mul_hi); r = v * x; phrases = &kMul; break;
      default: x = rng.pick(divisors); r = v / x; phrases = &kDiv; break;
    }
    const Phrase& ph = rng.pick(*phrases);
    auto vars = base;
    vars.insert(vars.end(), {{"x", str(x)}, {"v", str(v)}, {"r", str(r)}, {"k", str(x - 1)}});
    std::string text = fill(ph.text, vars);
    if (x - 1 == 1) {  // "with 1 friends"
      size_t at = text.find("1 friends");
      if (at != std::string::npos) text.replace(at, 9, "1 friend");
    }
    sentences.push_back(text);
    reasons.push_back(fill(ph.reason, vars));
    canonical += std::string("|") + op + str(x);
    program += python_step(reasons.back(), std::string("n = n ") + (op == '/' ? "//" : std::string(1, op)) + " " + str(x));
    chain.push_back({op, x});
    values.push_back(r);
    v = r;
  }

  std::string prompt;
  for (const auto& s : sentences) prompt += (prompt.empty() ? "" : " ") + s;
  prompt += " " + fill(rng.pick(kQuestions), base);
  std::string reasoning;
  for (const auto& s : reasons) reasoning += s + "\n";
  {
    // The check writes the whole computation as one expression, then recomputes it one
    // operation at a time, each "=" replacing the leftmost operation by its result:
    //   Check: 7 * 2 + 5 - 3 = 14 + 5 - 3 = 19 - 3 = 16.
    // A one-line "= 16" asks a tiny model for the whole computation in one token: it learned
    // to copy the last step's result there, and missed in 16% of the student's chains. Step by
    // step, every number is one it wrote above, and the traces practise each operation twice
    // (teacher 21.0% -> 46.2% held-out pass@1, same steps).
    std::string line = "Check: ";
    for (size_t k = 0; k < values.size(); ++k) {
      std::string e = str(values[k]);
      bool additive = false;
      for (size_t j = k; j < chain.size(); ++j) {
        char o = chain[j].first;
        if ((o == '*' || o == '/') && additive) e = "(" + e + ")";
        additive = (o == '+' || o == '-');
        e += std::string(" ") + o + " " + str(chain[j].second);
      }
      line += (k ? " = " : "") + e;
    }
    reasoning += line + ".";
  }
  d.ok = true;
  d.canonical = canonical;
  d.prompt = prompt;
  d.answer = str(v);
  d.completion = "<think>\n" + reasoning + "\n</think>\n" + "The answer is \\boxed{" + d.answer + "}.";
  // The tool-using trace (rewards/tool_calls.h, python format): the same steps, each the
  // problem's sentence as a comment and its operation as a line of Python, one call that
  // prints the result and the sandbox's output; the model writes no arithmetic itself.
  d.tool_completion = "<think>\n```python\n" + program + "print(n)\n```" +
                      rewards::render_observation(rewards::ToolFormat::Python, d.answer) + "</think>\n" +
                      "The answer is \\boxed{" + d.answer + "}.";
  return d;
}

// ---------------------------------------------------------------------------------------
// Code: a list task (read n integers, transform them step by step, print a reduction) or a
// pair task (read a and b, combine them, then apply constant operations). The outputs of the
// tests are computed here with Python's semantics (x % 2 on negatives, print(*a) of an
// empty list is an empty line).

enum class Tf { Even, Odd, Greater, Less, Multiple, Mul, Add, Sub, Square, Sort, Reverse };
struct Transform {
  Tf op;
  int64_t k = 0;
};
bool is_filter(Tf op) { return op == Tf::Even || op == Tf::Odd || op == Tf::Greater || op == Tf::Less || op == Tf::Multiple; }
bool is_order(Tf op) { return op == Tf::Sort || op == Tf::Reverse; }

std::string tf_canonical(const Transform& t) {
  switch (t.op) {
    case Tf::Even: return "even";
    case Tf::Odd: return "odd";
    case Tf::Greater: return ">" + str(t.k);
    case Tf::Less: return "<" + str(t.k);
    case Tf::Multiple: return "%" + str(t.k);
    case Tf::Mul: return "*" + str(t.k);
    case Tf::Add: return "+" + str(t.k);
    case Tf::Sub: return "-" + str(t.k);
    case Tf::Square: return "sq";
    case Tf::Sort: return "sort";
    case Tf::Reverse: return "rev";
  }
  return "?";
}
std::string tf_sentence(const Transform& t) {
  switch (t.op) {
    case Tf::Even: return "Keep only the even numbers.";
    case Tf::Odd: return "Keep only the odd numbers.";
    case Tf::Greater: return "Keep only the numbers greater than " + str(t.k) + ".";
    case Tf::Less: return "Keep only the numbers less than " + str(t.k) + ".";
    case Tf::Multiple: return "Keep only the multiples of " + str(t.k) + ".";
    case Tf::Mul: return "Multiply every number by " + str(t.k) + ".";
    case Tf::Add: return "Add " + str(t.k) + " to every number.";
    case Tf::Sub: return "Subtract " + str(t.k) + " from every number.";
    case Tf::Square: return "Square every number.";
    case Tf::Sort: return "Sort the numbers in increasing order.";
    case Tf::Reverse: return "Reverse the order of the numbers.";
  }
  return "";
}
std::string tf_python(const Transform& t) {
  switch (t.op) {
    case Tf::Even: return "a = [x for x in a if x % 2 == 0]";
    case Tf::Odd: return "a = [x for x in a if x % 2 == 1]";
    case Tf::Greater: return "a = [x for x in a if x > " + str(t.k) + "]";
    case Tf::Less: return "a = [x for x in a if x < " + str(t.k) + "]";
    case Tf::Multiple: return "a = [x for x in a if x % " + str(t.k) + " == 0]";
    case Tf::Mul: return "a = [x * " + str(t.k) + " for x in a]";
    case Tf::Add: return "a = [x + " + str(t.k) + " for x in a]";
    case Tf::Sub: return "a = [x - " + str(t.k) + " for x in a]";
    case Tf::Square: return "a = [x * x for x in a]";
    case Tf::Sort: return "a.sort()";
    case Tf::Reverse: return "a.reverse()";
  }
  return "";
}
std::vector<int64_t> tf_apply(const Transform& t, std::vector<int64_t> a) {
  std::vector<int64_t> out;
  switch (t.op) {
    case Tf::Even: for (int64_t x : a) if (x % 2 == 0) out.push_back(x); return out;
    case Tf::Odd: for (int64_t x : a) if (x % 2 != 0) out.push_back(x); return out;  // Python: x % 2 == 1 for odd negatives too
    case Tf::Greater: for (int64_t x : a) if (x > t.k) out.push_back(x); return out;
    case Tf::Less: for (int64_t x : a) if (x < t.k) out.push_back(x); return out;
    case Tf::Multiple: for (int64_t x : a) if (x % t.k == 0) out.push_back(x); return out;
    case Tf::Mul: for (int64_t& x : a) x *= t.k; return a;
    case Tf::Add: for (int64_t& x : a) x += t.k; return a;
    case Tf::Sub: for (int64_t& x : a) x -= t.k; return a;
    case Tf::Square: for (int64_t& x : a) x *= x; return a;
    case Tf::Sort: std::sort(a.begin(), a.end()); return a;
    case Tf::Reverse: std::reverse(a.begin(), a.end()); return a;
  }
  return a;
}

enum class Reduce { Sum, Count, Max, Min, List };
struct ReduceInfo {
  Reduce op;
  const char* canonical;
  const char* sentence;
  const char* python;
};
const std::vector<ReduceInfo> kReduces = {
    {Reduce::Sum, "sum", "Print their sum.", "print(sum(a))"},
    {Reduce::Count, "count", "Print how many numbers are left.", "print(len(a))"},
    {Reduce::Max, "max", "Print the largest number.", "print(max(a))"},
    {Reduce::Min, "min", "Print the smallest number.", "print(min(a))"},
    {Reduce::List, "list", "Print the numbers on one line, separated by spaces.", "print(*a)"},
};

std::string join(const std::vector<int64_t>& a) {
  std::string s;
  for (int64_t x : a) s += (s.empty() ? "" : " ") + str(x);
  return s;
}

// What the reduction prints, without the newline. Max and min are only chosen for
// pipelines without filters, whose lists are never empty.
std::string reduce_apply(Reduce r, const std::vector<int64_t>& a) {
  switch (r) {
    case Reduce::Sum: { int64_t s = 0; for (int64_t x : a) s += x; return str(s); }
    case Reduce::Count: return str(static_cast<int64_t>(a.size()));
    case Reduce::Max: return str(*std::max_element(a.begin(), a.end()));
    case Reduce::Min: return str(*std::min_element(a.begin(), a.end()));
    case Reduce::List: return join(a);
  }
  return "";
}

const std::vector<std::string> kIntros = {"Write a Python program.",
                                          "Write a Python 3 program that reads standard input and writes standard output."};
const std::vector<std::string> kListInputs = {"Input: the first line holds n, the second line holds n integers.",
                                              "The input is n on the first line and n integers on the second line."};
const std::vector<std::string> kPairInputs = {"Input: one line with two integers a and b.",
                                              "The input is one line with two integers a and b."};

constexpr int kMinTests = 3, kMaxTests = 5;

// Draws test inputs until the tests are distinct, do not all print the same thing (a
// program that prints a constant must not pass) and at most one prints an empty line (a
// program that prints nothing matches those). `run` maps an input to what is printed.
template <class MakeInput, class Run>
bool draw_tests(Rng& rng, MakeInput make_input, Run run, json& tests, std::string& first_input) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    int n = static_cast<int>(rng.uniform(kMinTests, kMaxTests));
    std::set<std::string> inputs, outputs;
    int empty = 0;
    json t = json::array();
    for (int i = 0; i < n; ++i) {
      std::string in = make_input();
      if (!inputs.insert(in).second) continue;
      std::string out = run(in);
      outputs.insert(out);
      empty += out.empty();
      t.push_back({{"input", in}, {"output", out + "\n"}});
    }
    if (t.size() >= static_cast<size_t>(kMinTests) && outputs.size() >= 2 && empty <= 1) {
      tests = std::move(t);
      first_input = tests[0]["input"].get<std::string>();
      return true;
    }
  }
  return false;
}

Draw draw_list_task(Rng& rng, const SyntheticSplitOptions& so, int steps) {
  Draw d;
  const int64_t value_hi = 2 * so.max_operand + 2;
  const int64_t small_hi = std::max<int64_t>(2, std::min<int64_t>(so.max_operand, 5));
  std::vector<Transform> tfs;
  bool any_filter = false, any_order = false;
  for (int i = 0; i < steps; ++i) {
    Transform t{static_cast<Tf>(rng.uniform(0, static_cast<int64_t>(Tf::Reverse)))};
    switch (t.op) {
      case Tf::Greater: case Tf::Less: t.k = rng.uniform(1, 2 * so.max_operand); break;
      case Tf::Multiple: t.k = rng.uniform(3, std::max<int64_t>(3, small_hi)); break;  // multiples of 2 are "even"
      case Tf::Mul: t.k = rng.uniform(2, small_hi); break;
      case Tf::Add: case Tf::Sub: t.k = rng.uniform(1, so.max_operand); break;
      default: break;
    }
    // One ordering step at most, and never the same operation twice in a row (a task that
    // reads naturally); a rejected draw is drawn again by the caller.
    if (is_order(t.op) && any_order) return d;
    if (!tfs.empty() && tfs.back().op == t.op) return d;
    // "Add 3, subtract 5" is "subtract 2" in two forms: one problem would own two canonical forms.
    if (!tfs.empty() && (t.op == Tf::Add || t.op == Tf::Sub) && (tfs.back().op == Tf::Add || tfs.back().op == Tf::Sub)) return d;
    any_filter = any_filter || is_filter(t.op);
    any_order = any_order || is_order(t.op);
    tfs.push_back(t);
  }
  std::vector<const ReduceInfo*> reduces;
  for (const auto& r : kReduces) {
    if (any_order && r.op != Reduce::List) continue;      // order only shows in a printed list
    if (r.op == Reduce::Count && !any_filter) continue;   // the count would be n
    if ((r.op == Reduce::Max || r.op == Reduce::Min) && any_filter) continue;  // the list may be empty
    reduces.push_back(&r);
  }
  const ReduceInfo& red = *rng.pick(reduces);

  auto pipeline = [&](std::vector<int64_t> a, std::vector<std::vector<int64_t>>* trail) {
    for (const auto& t : tfs) {
      a = tf_apply(t, std::move(a));
      if (trail) trail->push_back(a);
    }
    return a;
  };
  auto parse = [](const std::string& in) {
    std::vector<int64_t> a;
    size_t nl = in.find('\n');
    std::string rest = in.substr(nl + 1);
    size_t i = 0;
    while (i < rest.size()) {
      while (i < rest.size() && (rest[i] == ' ' || rest[i] == '\n')) ++i;
      size_t j = i;
      while (j < rest.size() && rest[j] != ' ' && rest[j] != '\n') ++j;
      if (j > i) a.push_back(std::stoll(rest.substr(i, j - i)));
      i = j;
    }
    return a;
  };
  auto make_input = [&] {
    int64_t n = rng.uniform(2, 7);
    std::vector<int64_t> a;
    for (int64_t i = 0; i < n; ++i) a.push_back(rng.uniform(0, value_hi));
    return str(n) + "\n" + join(a) + "\n";
  };
  auto run = [&](const std::string& in) { return reduce_apply(red.op, pipeline(parse(in), nullptr)); };
  std::string first_input;
  if (!draw_tests(rng, make_input, run, d.tests, first_input)) return d;

  d.canonical = "code:list";
  std::string statement = rng.pick(kIntros) + " " + rng.pick(kListInputs);
  std::string plan = "Read n, then the list a of n integers.\n";
  std::string program = "n = int(input())\na = list(map(int, input().split()))\n";
  for (const auto& t : tfs) {
    d.canonical += "|" + tf_canonical(t);
    statement += " " + tf_sentence(t);
    plan += tf_sentence(t) + "\n";
    program += tf_python(t) + "\n";
  }
  d.canonical += std::string("|") + red.canonical;
  statement += std::string(" ") + red.sentence;
  plan += std::string(red.sentence) + "\n";
  program += std::string(red.python) + "\n";

  // The self-check: the first test's list through every step, then what is printed.
  std::vector<std::vector<int64_t>> trail;
  std::vector<int64_t> start = parse(first_input);
  std::vector<int64_t> end = pipeline(start, &trail);
  std::string check = "Check on " + join(start) + ":";
  for (const auto& a : trail) check += " " + (a.empty() ? std::string("(none)") : join(a)) + ",";
  std::string printed = reduce_apply(red.op, end);
  check += " then it prints " + (printed.empty() ? std::string("an empty line") : printed) + ".";

  d.prompt = statement;
  d.program = program;
  d.completion = "<think>\n" + plan + check + "\n</think>\n```python\n" + program + "```";
  d.ok = true;
  return d;
}

struct PairOp {
  const char* canonical;
  const char* sentence;
  const char* python;
};
const std::vector<PairOp> kCombine = {
    {"a+b", "Compute a + b.", "r = a + b"},
    {"a-b", "Compute a - b.", "r = a - b"},
    {"a*b", "Compute a * b.", "r = a * b"},
    {"max", "Take the larger of a and b.", "r = max(a, b)"},
    {"min", "Take the smaller of a and b.", "r = min(a, b)"},
};

int64_t combine(size_t which, int64_t a, int64_t b) {
  switch (which) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return std::max(a, b);
    default: return std::min(a, b);
  }
}

Draw draw_pair_task(Rng& rng, const SyntheticSplitOptions& so, int steps) {
  Draw d;
  const int64_t value_hi = 2 * so.max_operand + 2;
  const int64_t small_hi = std::max<int64_t>(2, std::min<int64_t>(so.max_operand, 5));
  size_t which = static_cast<size_t>(rng.uniform(0, static_cast<int64_t>(kCombine.size()) - 1));
  struct ConstOp {
    char op;
    int64_t k;
  };
  std::vector<ConstOp> rest;
  for (int i = 1; i < steps; ++i) {
    char op = "+-*"[rng.uniform(0, 2)];
    int64_t k = op == '*' ? rng.uniform(2, small_hi) : rng.uniform(1, so.max_operand);
    // "Add 3, add 4" or "add 3, subtract 5" is one step in two: one problem would own two forms.
    if (!rest.empty() && (rest.back().op == op || (op != '*' && rest.back().op != '*'))) return d;
    rest.push_back({op, k});
  }
  auto compute = [&](int64_t a, int64_t b, std::vector<int64_t>* trail) {
    int64_t r = combine(which, a, b);
    if (trail) trail->push_back(r);
    for (const auto& c : rest) {
      r = c.op == '+' ? r + c.k : c.op == '-' ? r - c.k : r * c.k;
      if (trail) trail->push_back(r);
    }
    return r;
  };
  auto make_input = [&] { return str(rng.uniform(0, value_hi)) + " " + str(rng.uniform(0, value_hi)) + "\n"; };
  auto split_pair = [](const std::string& in) {
    size_t sp = in.find(' ');
    return std::make_pair(std::stoll(in.substr(0, sp)), std::stoll(in.substr(sp + 1)));
  };
  auto run = [&](const std::string& in) {
    auto ab = split_pair(in);
    return str(compute(ab.first, ab.second, nullptr));
  };
  std::string first_input;
  if (!draw_tests(rng, make_input, run, d.tests, first_input)) return d;

  const PairOp& c = kCombine[which];
  d.canonical = std::string("code:pair|") + c.canonical;
  std::string statement = rng.pick(kIntros) + " " + rng.pick(kPairInputs) + " " + c.sentence;
  std::string plan = std::string("Read a and b.\n") + c.sentence + "\n";
  std::string program = std::string("a, b = map(int, input().split())\n") + c.python + "\n";
  for (const auto& op : rest) {
    std::string sentence = op.op == '+'   ? "Add " + str(op.k) + " to the result."
                           : op.op == '-' ? "Subtract " + str(op.k) + " from the result."
                                          : "Multiply the result by " + str(op.k) + ".";
    d.canonical += std::string("|") + op.op + str(op.k);
    statement += " " + sentence;
    plan += sentence + "\n";
    program += std::string("r = r ") + op.op + " " + str(op.k) + "\n";
  }
  statement += " Print the result.";
  plan += "Print the result.\n";
  program += "print(r)\n";

  auto ab = split_pair(first_input);
  std::vector<int64_t> trail;
  compute(ab.first, ab.second, &trail);
  std::string check = "Check on a = " + str(ab.first) + ", b = " + str(ab.second) + ":";
  for (size_t i = 0; i < trail.size(); ++i) check += (i ? ", then " : " ") + str(trail[i]);
  check += ", so it prints " + str(trail.back()) + ".";

  d.prompt = statement;
  d.program = program;
  d.completion = "<think>\n" + plan + check + "\n</think>\n```python\n" + program + "```";
  d.ok = true;
  return d;
}

Draw draw_code(Rng& rng, const SyntheticSplitOptions& so, int steps) {
  // Lists are the richer family (filters, maps, orders); pairs cover "difference, product of two".
  return rng.uniform(0, 9) < 7 ? draw_list_task(rng, so, steps) : draw_pair_task(rng, so, steps);
}

// ---------------------------------------------------------------------------------------
// The split loop: draw, keep what this split owns, deduplicate.

void check_options(const SyntheticOptions& o) {
  for (Split s : kSplits) {
    const auto& so = split_options(o, s);
    std::string where = std::string("synthetic.") + split_name(s);
    if (so.math < 0 || so.code < 0)
      throw Error(ErrorInfo{"a problem count is negative", where, "math >= 0 and code >= 0",
                            "math = " + str(so.math) + ", code = " + str(so.code), "use 0 for a split you do not need"});
    if (so.min_steps < 1 || so.max_steps < so.min_steps || so.max_steps > 8)
      throw Error(ErrorInfo{"the step range is invalid", where, "1 <= min_steps <= max_steps <= 8",
                            "min_steps = " + str(so.min_steps) + ", max_steps = " + str(so.max_steps),
                            "a problem has at least one step; more than 8 makes traces no tiny model can hold"});
    if (so.max_operand < 2 || so.max_operand > 1000)
      throw Error(ErrorInfo{"max_operand is out of range", where, "2 <= max_operand <= 1000", str(so.max_operand),
                            "operands start at 2 (boxes, factors, divisors)"});
    if (so.max_value < 2 * so.max_operand)
      throw Error(ErrorInfo{"max_value is too small for max_operand", where, "max_value >= 2 * max_operand",
                            "max_value = " + str(so.max_value) + ", max_operand = " + str(so.max_operand),
                            "raise max_value or lower max_operand"});
  }
}

std::vector<SyntheticProblem> draw_split(const SyntheticOptions& o, Split split, bool code) {
  const SyntheticSplitOptions& so = split_options(o, split);
  const int64_t count = kind_count(so, code);
  const std::string kind = code ? "code" : "math";
  const std::string name = split_name(split);
  Rng rng(o.seed, name + "/" + kind);
  // Traces may repeat a canonical form in other words (more training text per form); RL and
  // evaluation prompts are distinct problems, so a score is not dominated by repeats.
  const bool unique_forms = split == Split::Rl || split == Split::Eval;
  std::set<std::string> seen;
  std::vector<SyntheticProblem> out;
  // A draw is kept with a probability of a few percent at least (valid's share of the form
  // space), so this many draws in a row without a new problem means the split's space is
  // used up: its difficulty leaves fewer distinct problems than asked for.
  constexpr int64_t kMaxFruitlessDraws = 100000;
  int64_t fruitless = 0, draws = 0;
  while (static_cast<int64_t>(out.size()) < count) {
    if (fruitless >= kMaxFruitlessDraws) {
      throw Error(ErrorInfo{"cannot find enough distinct " + kind + " problems for the " + name + " split",
                            "synthetic." + name, str(count) + " problems",
                            str(static_cast<int64_t>(out.size())) + " after " + str(draws) + " draws",
                            "lower synthetic." + name + "." + kind + ", or widen the space: raise max_steps, max_operand or max_value"});
    }
    ++draws, ++fruitless;
    int steps = static_cast<int>(rng.uniform(so.min_steps, so.max_steps));
    Draw d = code ? draw_code(rng, so, steps) : draw_math(rng, so, steps);
    if (!d.ok) continue;
    if (owner_of(d.canonical, code, steps, o) != split) continue;
    if (!seen.insert(unique_forms ? d.canonical : d.prompt).second) continue;
    SyntheticProblem p;
    p.id = name + "-" + kind + "-" + str(static_cast<int64_t>(out.size()));
    p.split = name;
    p.kind = kind;
    p.canonical = std::move(d.canonical);
    p.steps = steps;
    p.prompt = std::move(d.prompt);
    p.completion = std::move(o.tools == "python" && !code ? d.tool_completion : d.completion);
    p.answer = std::move(d.answer);
    p.program = std::move(d.program);
    p.tests = std::move(d.tests);
    out.push_back(std::move(p));
    fruitless = 0;
  }
  return out;
}

// Math and code traces in one file, shuffled so that a training batch mixes both.
std::vector<SyntheticProblem> mixed(const SyntheticOptions& o, Split split) {
  std::vector<SyntheticProblem> all = draw_split(o, split, /*code=*/false);
  std::vector<SyntheticProblem> code = draw_split(o, split, /*code=*/true);
  all.insert(all.end(), std::make_move_iterator(code.begin()), std::make_move_iterator(code.end()));
  Rng rng(o.seed, std::string(split_name(split)) + "/shuffle");
  rng.shuffle(all);
  return all;
}

std::string jsonl(const std::vector<nlohmann::ordered_json>& lines) {
  std::string out;
  for (const auto& j : lines) out += j.dump() + "\n";
  return out;
}

}  // namespace

SyntheticData generate_synthetic(const SyntheticOptions& options) {
  check_options(options);
  SyntheticData data;
  data.train = mixed(options, Split::Train);
  data.valid = mixed(options, Split::Valid);
  data.rl_math = draw_split(options, Split::Rl, /*code=*/false);
  data.rl_code = draw_split(options, Split::Rl, /*code=*/true);
  data.eval_math = draw_split(options, Split::Eval, /*code=*/false);
  data.eval_code = draw_split(options, Split::Eval, /*code=*/true);
  return data;
}

nlohmann::ordered_json trace_line(const SyntheticProblem& p) {
  return nlohmann::ordered_json{{"id", p.id}, {"prompt", p.prompt}, {"completion", p.completion}};
}

nlohmann::ordered_json prompt_line(const SyntheticProblem& p) {
  if (p.kind == "math") return nlohmann::ordered_json{{"id", p.id}, {"prompt", p.prompt}, {"answer", p.answer}};
  return nlohmann::ordered_json{{"id", p.id}, {"prompt", p.prompt}, {"tests", nlohmann::ordered_json(p.tests)}};
}

SyntheticFiles write_synthetic(const SyntheticData& data, const std::string& dir, bool tokenizer_corpus) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw Error("cannot create the output folder of the synthetic data: " + ec.message(), dir,
                      "check the path and its permissions");
  auto lines = [](const std::vector<SyntheticProblem>& ps, nlohmann::ordered_json (*f)(const SyntheticProblem&)) {
    std::vector<nlohmann::ordered_json> out;
    for (const auto& p : ps) out.push_back(f(p));
    return out;
  };
  SyntheticFiles files;
  auto write = [&](const std::string& name, const std::vector<nlohmann::ordered_json>& ls) {
    std::string path = (std::filesystem::path(dir) / name).string();
    write_file_atomic(path, jsonl(ls));
    return path;
  };
  files.traces_train = write("traces.train.jsonl", lines(data.train, trace_line));
  files.traces_valid = write("traces.valid.jsonl", lines(data.valid, trace_line));
  files.rl_math = write("rl.math.jsonl", lines(data.rl_math, prompt_line));
  files.rl_code = write("rl.code.jsonl", lines(data.rl_code, prompt_line));
  files.eval_math = write("eval.math.jsonl", lines(data.eval_math, prompt_line));
  files.eval_code = write("eval.code.jsonl", lines(data.eval_code, prompt_line));
  if (tokenizer_corpus) {
    // The texts the models will read and write. Evaluation prompts stay out: nothing of the
    // held-out split, not even its wording statistics, reaches training.
    std::vector<nlohmann::ordered_json> texts;
    for (const auto* ps : {&data.train, &data.valid})
      for (const auto& p : *ps) {
        texts.push_back({{"text", p.prompt}});
        texts.push_back({{"text", p.completion}});
      }
    for (const auto* ps : {&data.rl_math, &data.rl_code})
      for (const auto& p : *ps) texts.push_back({{"text", p.prompt}});
    files.tokenizer_corpus = write("tokenizer.jsonl", texts);
  }
  return files;
}

}  // namespace retort
