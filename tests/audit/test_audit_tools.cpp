// Audit of tool calls: chains.jsonl's "tool_calls" records round-trip, the --tool-status and
// --min/--max-tool-calls filters, the summary's tool counts, the readable chain view, the
// constant-print flag, and the report's chain browser with the calls in place.
//
// The fixture is a handful of chains typed out by hand (python and qwen formats, the delimiters
// of rewards/tool_calls.h); each expected set and count is read off that table, not computed by
// the library.
#include <fcntl.h>     // defines: O_WRONLY
#include <spawn.h>     // defines: posix_spawn
#include <sys/wait.h>  // defines: waitpid
#include <unistd.h>    // defines: environ

#include <cstdio>      // defines: popen
#include <filesystem>  // defines: std::filesystem
#include <fstream>     // defines: std::ofstream
#include <functional>  // defines: std::function
#include <map>         // defines: std::map
#include <set>         // defines: std::set
#include <sstream>     // defines: std::stringstream

#include "audit/audit_command.h"  // defines: run_audit, show_chain
#include "audit/chain_log.h"      // defines: ChainEntry, ChainLog
#include "audit/query.h"          // defines: ChainFilter, ChainQuery, Summary, prints_only_constants
#include "audit/report.h"         // defines: write_report
#include "error_of.h"             // defines: error_of
#include "jsonl_files.h"  // defines: read_text
#include "rewards/tool_calls.h"   // defines: ToolCallRecord, to_json

#include <catch2/catch.hpp>
#include "run_capture.h"  // defines: run_to_file
#include "test_paths.h"  // defines: RETORT_BINARY_DIR

namespace fs = std::filesystem;
using nlohmann::json;
using namespace retort::audit;

namespace {

const std::string kBin = RETORT_BINARY_DIR;

struct Call {
  std::string code, observation, status;
  double wall_s;
  int64_t memory_kb;
};

std::string py_block(const Call& c) {
  return "\n```python\n" + c.code + "\n```\n```output\n" + c.observation + "\n```\n";
}

std::string qwen_block(const Call& c) {
  return "<tool_call>\n" + json{{"name", "python"}, {"arguments", {{"code", c.code}}}}.dump() +
         "\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n" + c.observation +
         "\n</tool_response><|im_end|>\n<|im_start|>assistant\n";
}

// One chain line as the trainer writes it: calls in the text and as records.
json chain(const std::string& id, const std::vector<Call>& calls, const std::string& answer_value, bool qwen = false,
           bool with_key = true) {
  std::string reasoning, answer;
  if (qwen) {
    answer = "I will compute it.";
    for (const auto& c : calls) answer += qwen_block(c) + "Next.";
    answer += " The answer is \\boxed{" + answer_value + "}.";
  } else {
    reasoning = "Let me compute.";
    for (const auto& c : calls) reasoning += py_block(c) + "Next.";
    answer = "The answer is \\boxed{" + answer_value + "}.";
  }
  std::string text = qwen ? answer : reasoning + "\n</think>\n" + answer;
  json records = json::array();
  for (const auto& c : calls) {
    retort::rewards::ToolCallRecord r;
    r.code = c.code;
    r.observation = c.observation;
    r.status = c.status;
    r.wall_s = c.wall_s;
    r.peak_memory_kb = c.memory_kb;
    records.push_back(retort::rewards::to_json(r));
  }
  json math = {{"reward", 1.0}, {"passed", true}, {"detail", {{"extracted", answer_value}, {"gold", answer_value}}}};
  json line = {{"step", 1},        {"prompt_id", id},   {"group", 0},       {"sample", 0},
               {"prompt", "Compute it."}, {"text", text}, {"reasoning", reasoning}, {"answer", answer},
               {"verifiers", {{"math", math}}}, {"reward", 1.0}, {"advantage", 0.0}, {"kl", nullptr},
               {"length", 100},    {"truncated", false}};
  if (with_key && !records.empty()) line["tool_calls"] = records;
  return line;
}

const Call kProduct = {"print(123*456)", "56088", "ok", 0.12, 5120};
const Call kHang = {"while True:\n    pass", "[time_limit: wall 5 s]", "time_limit", 5.01, 3000};
const Call kConst = {"print(42)", "42", "ok", 0.05, 4000};
const Call kArith = {"print(6*7)", "42", "ok", 0.06, 4100};
const Call kVar = {"x = 6*7\nprint(x)", "42", "ok", 0.07, 4200};
const Call kCrash = {"print(1/0)", "ZeroDivisionError: division by zero\n[runtime_error: exit code 1]", "runtime_error", 0.2, 6000};
const Call kBudget = {"print(2)", "[budget: 3 calls per chain]", "budget", 0.0, 0};

// The fixture: id -> what it holds.
//   c1 python: ok + time_limit, answer 56088       c4 python: x = 6*7; print(x) -> 42, answer 42
//   c2 python: print(42) -> 42, answer 42          c5 no calls (no "tool_calls" key)
//   c3 python: print(6*7) -> 42, answer 42         c6 qwen: ok + runtime_error + budget, answer 56088
std::vector<json> fixture() {
  return {chain("c1", {kProduct, kHang}, "56088"), chain("c2", {kConst}, "42"),   chain("c3", {kArith}, "42"),
          chain("c4", {kVar}, "42"),               chain("c5", {}, "7"),           chain("c6", {kProduct, kCrash, kBudget}, "56088", true)};
}

std::string write_run(const std::string& name) {
  std::string dir = kBin + "/test_runs/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream f(dir + "/chains.jsonl");
  for (const auto& c : fixture()) f << c.dump() << "\n";
  return dir;
}

std::set<std::string> matching(const std::string& dir, const ChainFilter& filter) {
  ChainQuery q(filter);
  JsonlReader r(dir + "/chains.jsonl");
  json c;
  std::string raw;
  std::set<std::string> ids;
  while (r.next(c, raw))
    if (q.matches(view_chain(c, "x"), c)) ids.insert(c["prompt_id"].get<std::string>());
  return ids;
}

}  // namespace

TEST_CASE("audit tools: tool_calls records round-trip through the chain log", "[unit]") {
  std::string dir = kBin + "/test_runs/audit_tools_roundtrip";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string path = dir + "/chains.jsonl";
  {
    retort::ChainLog log(path);
    retort::ChainEntry with, without;
    with.prompt_id = "a";
    retort::rewards::ToolCallRecord r;
    r.code = "print(2**10)";
    r.observation = "1024";
    r.status = "ok";
    r.wall_s = 0.25;
    r.peak_memory_kb = 7168;
    r.obs_start = 31;
    r.obs_tokens = 9;
    r.truncated = true;
    with.tool_calls.push_back(retort::rewards::to_json(r));
    r.status = "time_limit";
    r.observation = "[time_limit: wall 5 s]";
    with.tool_calls.push_back(retort::rewards::to_json(r));
    without.prompt_id = "b";
    log.write(with);
    log.write(without);
    log.flush();
  }
  JsonlReader reader(path);
  json line;
  std::string raw;
  REQUIRE(reader.next(line, raw));
  REQUIRE(line.contains("tool_calls"));
  const json& rec = line["tool_calls"][0];
  CHECK(rec["code"] == "print(2**10)");
  CHECK(rec["observation"] == "1024");
  CHECK(rec["obs_start"] == 31);
  CHECK(rec["obs_tokens"] == 9);
  ChainView v = view_chain(line, path + ":1");
  REQUIRE(v.tool_calls.size() == 2);
  CHECK(v.tool_calls[0].status == "ok");
  CHECK(v.tool_calls[0].wall_s == 0.25);
  CHECK(v.tool_calls[0].peak_memory_kb == 7168);
  CHECK(v.tool_calls[0].truncated);
  CHECK(v.tool_calls[0].code() == "print(2**10)");
  CHECK(v.tool_calls[1].status == "time_limit");
  CHECK(v.tool_calls[1].observation() == "[time_limit: wall 5 s]");
  // A chain without calls has no key, and reads as zero calls.
  REQUIRE(reader.next(line, raw));
  CHECK_FALSE(line.contains("tool_calls"));
  CHECK(view_chain(line, path + ":2").tool_calls.empty());

  // A record of the wrong shape names the field.
  json bad = line;
  bad["tool_calls"] = json::array({{{"code", "x"}, {"status", 3}}});
  CHECK(error_of([&] { view_chain(bad, "f.jsonl:9"); }).find("tool_calls[0].status") != std::string::npos);
  bad["tool_calls"] = "none";
  CHECK(error_of([&] { view_chain(bad, "f.jsonl:9"); }).find("f.jsonl:9") != std::string::npos);
}

TEST_CASE("audit tools: --tool-status and --min/--max-tool-calls select exactly the expected chains", "[unit]") {
  std::string dir = write_run("audit_tools_filters");
  using Ids = std::set<std::string>;
  struct Case {
    const char* name;
    std::function<void(ChainFilter&)> set;
    Ids want;
  };
  const std::vector<Case> cases = {
      {"--tool-status time_limit", [](ChainFilter& f) { f.tool_status = {"time_limit"}; }, {"c1"}},
      {"--tool-status runtime_error --tool-status budget", [](ChainFilter& f) { f.tool_status = {"runtime_error", "budget"}; },
       {"c6"}},
      {"--tool-status ok", [](ChainFilter& f) { f.tool_status = {"ok"}; }, {"c1", "c2", "c3", "c4", "c6"}},
      {"--tool-status memory_limit", [](ChainFilter& f) { f.tool_status = {"memory_limit"}; }, {}},
      {"--min-tool-calls 2", [](ChainFilter& f) { f.tool_calls_min = 2; }, {"c1", "c6"}},
      {"--min-tool-calls 3", [](ChainFilter& f) { f.tool_calls_min = 3; }, {"c6"}},
      {"--max-tool-calls 0", [](ChainFilter& f) { f.tool_calls_max = 0; }, {"c5"}},
      {"--min-tool-calls 1 --max-tool-calls 1", [](ChainFilter& f) { f.tool_calls_min = 1, f.tool_calls_max = 1; },
       {"c2", "c3", "c4"}},
      {"--min-tool-calls 1 --tool-status ok --max-tool-calls 2",
       [](ChainFilter& f) { f.tool_calls_min = 1, f.tool_calls_max = 2, f.tool_status = {"ok"}; }, {"c1", "c2", "c3", "c4"}},
      {"--flag answer_from_constant_print", [](ChainFilter& f) { f.flags = {"answer_from_constant_print"}; }, {"c2"}},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    ChainFilter f;
    c.set(f);
    CHECK(matching(dir, f) == c.want);
  }

  auto query_error = [](std::function<void(ChainFilter&)> set) {
    return error_of([&] {
      ChainFilter f;
      set(f);
      ChainQuery q(f);
    });
  };
  std::string e = query_error([](ChainFilter& f) { f.tool_status = {"timeout"}; });
  CHECK(e.find("--tool-status") != std::string::npos);
  CHECK(e.find("time_limit") != std::string::npos);  // the known statuses are listed
  CHECK(e.find("budget") != std::string::npos);
  CHECK(query_error([](ChainFilter& f) { f.tool_calls_min = 3, f.tool_calls_max = 1; }).find("min <= max") != std::string::npos);
  CHECK(query_error([](ChainFilter& f) { f.tool_calls_max = -1; }).find("--max-tool-calls") != std::string::npos);
}

TEST_CASE("audit tools: summary counts calls per chain and calls by status", "[unit]") {
  std::string dir = write_run("audit_tools_summary");
  AuditOptions opt;
  opt.run_dir = dir;
  opt.summary = true;
  opt.summary_json = true;
  std::ostringstream out;
  run_audit(opt, out);
  json s = json::parse(out.str());
  const json& t = s["tool_calls"];
  // From the fixture table: 2 + 1 + 1 + 1 + 0 + 3 calls in 5 of 6 chains.
  CHECK(t["calls"] == 8);
  CHECK(t["chains_with_calls"] == 5);
  CHECK(t["calls_per_chain_mean"].get<double>() == Approx(8.0 / 6.0));
  CHECK(t["calls_per_chain"] == json::parse(R"([{"calls":0,"chains":1},{"calls":1,"chains":3},{"calls":2,"chains":1},
                                                {"calls":3,"chains":1}])"));
  std::map<std::string, int64_t> by_status;
  for (const auto& row : t["by_status"]) {
    by_status[row["status"].get<std::string>()] = row["calls"].get<int64_t>();
    CHECK(row["share"].get<double>() == Approx(row["calls"].get<double>() / 8.0));
  }
  CHECK(by_status == std::map<std::string, int64_t>{{"ok", 5}, {"time_limit", 1}, {"runtime_error", 1}, {"budget", 1}});
  CHECK(t["wall_s_max"].get<double>() == Approx(5.01));
  CHECK(t["wall_s_mean"].get<double>() == Approx((0.12 + 5.01 + 0.05 + 0.06 + 0.07 + 0.12 + 0.2 + 0.0) / 8.0));
  CHECK(t["peak_memory_kb_max"] == 6000);
  // The flag table counts the one constant print.
  for (const auto& f : s["flags"])
    if (f["flag"] == "answer_from_constant_print") CHECK(f["count"] == 1);

  opt.summary_json = false;
  std::ostringstream text;
  run_audit(opt, text);
  CHECK(text.str().find("tool calls 8 in 5 of 6 chains (1.33 per chain)") != std::string::npos);
  CHECK(text.str().find("time_limit") != std::string::npos);
  CHECK(text.str().find("62.5%") != std::string::npos);  // ok: 5 of 8 calls
}

TEST_CASE("audit tools: the readable chain view shows each call with status, time and memory", "[unit]") {
  std::string dir = write_run("audit_tools_show");
  AuditOptions opt;
  opt.run_dir = dir;
  opt.show = true;
  opt.filter.prompt_ids = {"c1"};
  std::ostringstream out;
  run_audit(opt, out);
  const std::string s = out.str();
  CHECK(s.find("--- tool calls (2)") != std::string::npos);
  CHECK(s.find("[1] ok · wall 0.120 s · memory 5120 kB") != std::string::npos);
  CHECK(s.find("    code | print(123*456)") != std::string::npos);
  CHECK(s.find("    out  | 56088") != std::string::npos);
  CHECK(s.find("[2] time_limit · wall 5.010 s · memory 3000 kB") != std::string::npos);
  CHECK(s.find("    code |     pass") != std::string::npos);  // every line of the program, indented
  // A chain without calls has no such section.
  opt.filter.prompt_ids = {"c5"};
  std::ostringstream none;
  run_audit(opt, none);
  CHECK(none.str().find("tool calls") == std::string::npos);
}

TEST_CASE("audit tools: a program that only prints constants", "[unit]") {
  struct Case {
    const char* code;
    bool constant;
  };
  const Case cases[] = {
      {"print(42)", true},
      {"print(\"42\")", true},
      {"print('42', end='')", true},
      {"print(42)  # the answer", true},
      {"# compute\nprint(-3.5e2)\n", true},
      {"print(42); print(43)", true},
      {"print(r'4' \"2\", sep='', flush=True)", true},
      {"print(6*7)", false},
      {"x = 6*7\nprint(x)", false},
      {"print(f\"{6*7}\")", false},
      {"print(len('ab'))", false},
      {"import math\nprint(42)", false},
      {"print('a' + 'b')", false},
      {"print(42 if True else 0)", false},
      {"print(42", false},
      {"", false},
      {"# nothing", false},
      {"print(\"a # not a comment\")", true},
      {"print('x'); y = 2", false},
  };
  for (const auto& c : cases) {
    INFO(c.code);
    CHECK(prints_only_constants(c.code) == c.constant);
  }
}

TEST_CASE("audit tools: the constant-print flag", "[unit]") {
  // Flagged: print(42) or print("42") whose output is the final answer. Not flagged: a program
  // that computes it (print(6*7), x = 6*7; print(x)), a constant that is not the answer, a
  // call that did not end ok.
  auto flagged = [](const Call& call, const std::string& answer) {
    json c = chain("x", {call}, answer);
    for (const auto& f : chain_flags(view_chain(c, "x"), c, FlagOptions{}))
      if (f.code == "answer_from_constant_print") return true;
    return false;
  };
  CHECK(flagged(kConst, "42"));
  CHECK(flagged({"print(\"42\")", "42", "ok", 0.1, 1}, "42"));
  CHECK(flagged({"print('  42 ')", "  42 ", "ok", 0.1, 1}, "42"));  // the observation is trimmed
  CHECK_FALSE(flagged(kArith, "42"));
  CHECK_FALSE(flagged(kVar, "42"));
  CHECK_FALSE(flagged(kConst, "43"));
  CHECK_FALSE(flagged({"print(42)", "42\n[runtime_error: exit code 1]", "runtime_error", 0.1, 1}, "42"));
  // Qwen format too, and the evidence names the call.
  json q = chain("q", {kProduct, kConst}, "42", /*qwen=*/true);
  auto flags = chain_flags(view_chain(q, "x"), q, FlagOptions{});
  REQUIRE(flags.size() >= 1);
  bool found = false;
  for (const auto& f : flags)
    if (f.code == "answer_from_constant_print") found = f.why.find("call 2 of 2") != std::string::npos;
  CHECK(found);
  REQUIRE(find_flag_kind("answer_from_constant_print") != nullptr);
}

TEST_CASE("audit tools: report.html shows the calls in the chain browser", "[unit]") {
  std::string dir = write_run("audit_tools_report");
  // A seventh chain whose program and output are hostile markup: they must stay text.
  const std::string xss = "</script><img src=x onerror=alert(1)>";
  std::ofstream(dir + "/chains.jsonl", std::ios::app)
      << chain("c7", {{"print('" + xss + "')", xss, "ok", 0.1, 1}}, "1").dump() << "\n";
  ReportOptions opt;
  opt.run_dir = dir;
  opt.per_step = 100;
  ReportResult res = write_report(opt);
  REQUIRE(res.embedded == 7);
  std::string html = read_text(res.path);
  CHECK(html.find("<section id=\"tools\">") != std::string::npos);
  CHECK(html.find("9 calls in 6 of 7 chains") != std::string::npos);
  CHECK(html.find("id=\"f-tool\"") != std::string::npos);
  CHECK(html.find("<img") == std::string::npos);
  size_t closes = 0;
  for (size_t p = html.find("</script>"); p != std::string::npos; p = html.find("</script>", p + 1)) ++closes;
  CHECK(closes == 2);  // the page's own two

  const std::string open = "<script type=\"application/json\" id=\"chains-data\">";
  size_t a = html.find(open) + open.size();
  json data = json::parse(html.substr(a, html.find("</script>", a) - a));
  std::map<std::string, json> by_id;
  for (const auto& c : data["chains"]) by_id[c["prompt_id"].get<std::string>()] = c;
  // c1 (python): the reasoning is cut around its two calls, each replaced by its record's index.
  const json& c1 = by_id["c1"];
  REQUIRE(c1["tool_calls"].size() == 2);
  CHECK(c1["tool_calls"][0]["code"] == "print(123*456)");
  CHECK(c1["tool_calls"][1]["status"] == "time_limit");
  CHECK(c1["tool_calls"][1]["wall_s"] == 5.01);
  CHECK(c1["reasoning_parts"] == json::parse(R"(["Let me compute.\n", {"call": 0}, "Next.\n", {"call": 1}, "Next."])"));
  CHECK_FALSE(c1.contains("answer_parts"));
  // c6 (qwen, no think block): the calls sit in the answer.
  const json& c6 = by_id["c6"];
  REQUIRE(c6["answer_parts"].is_array());
  CHECK(c6["answer_parts"].size() == 7);
  CHECK(c6["answer_parts"][1] == json{{"call", 0}});
  CHECK(c6["answer_parts"][5] == json{{"call", 2}});
  CHECK(c6["answer_parts"][6] == "Next. The answer is \\boxed{56088}.");
  // c5: no calls, nothing added.
  CHECK_FALSE(by_id["c5"].contains("tool_calls"));
  CHECK_FALSE(by_id["c5"].contains("reasoning_parts"));
  CHECK(by_id["c7"]["tool_calls"][0]["observation"] == xss);  // decoded back to the text
}

TEST_CASE("audit tools: the chain browser renders calls in place in headless Chromium", "[unit]") {
  std::string browser;
  for (const char* b : {"/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"})
    if (fs::exists(b)) browser = b;
  if (browser.empty()) {
    WARN("no Chromium (Debian package chromium): the tool-call boxes are not checked in a browser");
    return;
  }
  std::string dir = write_run("audit_tools_browser");
  ReportOptions opt;
  opt.run_dir = dir;
  ReportResult res = write_report(opt);
  // #search= selects the first chain whose text holds it: c1, with the time limit.
  std::string cmd = "timeout 90 " + browser +
                    " --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking"
                    " --disable-component-update --disable-sync --disable-quic --user-data-dir=" +
                    dir + "/chromium-profile --dump-dom 'file://" + res.path + "#search=wall 5 s' 2>/dev/null";
  std::string dom;
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p);
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) dom.append(buf, n);
  pclose(p);
  REQUIRE(!dom.empty());
  CHECK(dom.find("1 of 6 embedded chains match") != std::string::npos);
  // Two boxes, in place between the reasoning's text pieces, with badges, code and output.
  size_t first = dom.find("class=\"toolcall\"");
  REQUIRE(first != std::string::npos);
  CHECK(dom.find("class=\"toolcall\"", first + 1) != std::string::npos);
  CHECK(dom.find("<span class=\"badge tool-ok\">ok</span>") != std::string::npos);
  CHECK(dom.find("<span class=\"badge tool-bad\">time_limit</span>") != std::string::npos);
  CHECK(dom.find("<pre class=\"code\">print(123*456)</pre>") != std::string::npos);
  CHECK(dom.find("<pre class=\"output\">56088</pre>") != std::string::npos);
  CHECK(dom.find("wall 5.010 s · memory 3000 kB") != std::string::npos);
  CHECK(dom.find("<pre class=\"reasoning\">Let me compute.") < first);
}

TEST_CASE("audit tools: the retort CLI filters by tool status and count", "[unit]") {
  std::string bin = kBin + "/retort";
  if (!fs::exists(bin)) {
    WARN("no " << bin << " in this build (RETORT_BUILD_CORE=OFF builds no executable): CLI not exercised");
    return;
  }
  std::string dir = write_run("audit_tools_cli");
  auto run = [&](std::vector<std::string> args, const std::string& out_path) {
    return run_to_file(bin, std::move(args), out_path);
  };
  auto ids = [&](const std::string& path) {
    std::set<std::string> out;
    std::istringstream in(read_text(path));
    for (std::string line; std::getline(in, line);) out.insert(json::parse(line)["prompt_id"].get<std::string>());
    return out;
  };
  std::string out = dir + "/cli.out";
  REQUIRE(run({"audit", dir, "--tool-status", "time_limit", "--tool-status", "budget"}, out) == 0);
  CHECK(ids(out) == std::set<std::string>{"c1", "c6"});
  REQUIRE(run({"audit", dir, "--min-tool-calls", "1", "--max-tool-calls", "1"}, out) == 0);
  CHECK(ids(out) == std::set<std::string>{"c2", "c3", "c4"});
  REQUIRE(run({"audit", dir, "--flag", "answer_from_constant_print"}, out) == 0);
  CHECK(ids(out) == std::set<std::string>{"c2"});
  CHECK(run({"audit", dir, "--tool-status", "hung"}, out) != 0);
  CHECK(read_text(out + ".err").find("--tool-status") != std::string::npos);
}
