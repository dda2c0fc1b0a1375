// Job / Result JSON, config binding, and the JSON-lines driver of `retort sandbox run`.
#include <catch2/catch.hpp>

#include <cmath>    // defines: std::nan
#include <sstream>  // defines: std::istringstream, std::ostringstream
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

#include "common/config.h"     // defines: parse_config
#include "common/error.h"      // defines: retort::Error
#include "sandbox/executor.h"  // defines: job_from_json, to_json, run_jobs_jsonl

using namespace retort::sandbox;
using nlohmann::json;

TEST_CASE("status names round-trip", "[unit]") {
  const std::vector<std::pair<Status, std::string>> table = {
      {Status::Ok, "ok"},
      {Status::RuntimeError, "runtime_error"},
      {Status::CompileError, "compile_error"},
      {Status::TimeLimit, "time_limit"},
      {Status::MemoryLimit, "memory_limit"},
      {Status::OutputLimit, "output_limit"},
      {Status::SandboxError, "sandbox_error"},
  };
  for (const auto& [s, name] : table) {
    CHECK(status_name(s) == name);
    CHECK(status_from_name(name) == s);
  }
  CHECK_THROWS_AS(status_from_name("fine"), retort::Error);
}

TEST_CASE("job_from_json reads jobs and rejects bad ones naming the line", "[unit]") {
  Limits defaults;
  defaults.wall_s = 3;
  Job j = job_from_json(json::parse(R"j({"language":"python","source":"print(1)","stdin":"x",
                                        "files":{"a.txt":"A"},"limits":{"memory_mb":64}})j"),
                        "stdin:1", defaults);
  CHECK(j.language == "python");
  CHECK(j.source == "print(1)");
  CHECK(j.stdin_data == "x");
  REQUIRE(j.files.size() == 1);
  CHECK(j.files[0] == std::make_pair(std::string("a.txt"), std::string("A")));
  CHECK(j.limits.memory_mb == 64);
  CHECK(j.limits.wall_s == 3);  // from the defaults
  Job j2 = job_from_json(json::parse(R"j({"language":"cpp","source":"s","files":[["b","B"]]})j"), "x");
  CHECK(j2.files[0].first == "b");
  CHECK(j2.limits.wall_s == Limits{}.wall_s);

  struct Bad {
    const char* text;
    const char* message_has;
  };
  for (const Bad& b : std::vector<Bad>{
           {R"j([1,2])j", "JSON object"},
           {R"j({"source":"x"})j", "language"},
           {R"j({"language":"python"})j", "source"},
           {R"j({"language":"python","source":"x","stdn":"typo"})j", "stdn"},
           {R"j({"language":"python","source":5})j", "string"},
           {R"j({"language":"python","source":"x","limits":{"wall":1}})j", "wall"},
           {R"j({"language":"python","source":"x","limits":{"wall_s":"1"}})j", "wall_s"},
           {R"j({"language":"python","source":"x","files":[["a"]]})j", "files"},
       }) {
    INFO(b.text);
    try {
      job_from_json(json::parse(b.text), "stdin:7");
      FAIL("accepted a bad job");
    } catch (const retort::Error& e) {
      std::string msg = e.what();
      CHECK(msg.find("stdin:7") != std::string::npos);
      CHECK(msg.find(b.message_has) != std::string::npos);
    }
  }
}

TEST_CASE("to_json writes every field and keeps invalid UTF-8 printable", "[unit]") {
  Result r;
  r.status = Status::TimeLimit;
  r.exit_code = -1;
  r.signal = 9;
  r.wall_s = 1.5;
  r.cpu_s = 1.25;
  r.peak_memory_kb = 1234;
  r.stdout_text = std::string("ok\xff\xfe", 4);
  r.stderr_text = "err";
  r.detail = "wall clock 1.00 s exceeded";
  json j = to_json(r);
  CHECK(j["status"] == "time_limit");
  CHECK(j["exit_code"] == -1);
  CHECK(j["signal"] == 9);
  CHECK(j["wall_s"] == 1.5);
  CHECK(j["cpu_s"] == 1.25);
  CHECK(j["peak_memory_kb"] == 1234);
  CHECK(j["stderr"] == "err");
  CHECK(j["detail"] == "wall clock 1.00 s exceeded");
  CHECK(j["stdout"] == "ok\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK_NOTHROW(j.dump());
}

TEST_CASE("ExecutorConfig binds strictly", "[unit]") {
  auto cfg = retort::parse_config<ExecutorConfig>(
      json::parse(R"j({"workers":8,"isolation":"rlimits-only","warm_workers":true,"default_limits":{"wall_s":2}})j"),
      "test.json");
  CHECK(cfg.workers == 8);
  CHECK(cfg.isolation == "rlimits-only");
  CHECK(cfg.warm_workers);
  CHECK(cfg.default_limits.wall_s == 2);
  CHECK_THROWS_AS(retort::parse_config<ExecutorConfig>(json::parse(R"j({"isolation":"none"})j"), "t"), retort::Error);
  CHECK_THROWS_AS(retort::parse_config<ExecutorConfig>(json::parse(R"j({"worker":1})j"), "t"), retort::Error);
}

// Every limit is range-checked (ranges documented in sandbox/executor.h): a zero or negative
// memory cap used to leave the cgroup unlimited, 1e10 s of wall clock overflowed the timer into
// an instant time limit, and max_processes 0 came back as a bubblewrap error.
TEST_CASE("Limits: every limit is range-checked with one error naming the key and the range", "[unit]") {
  struct Case {
    const char* limits;
    const char* key;
    const char* range;
  };
  const Case cases[] = {
      {R"j({"memory_mb": -5})j", "memory_mb", "[16, 1048576] MB"},
      {R"j({"memory_mb": 0})j", "memory_mb", "[16, 1048576] MB"},
      {R"j({"memory_mb": 15})j", "memory_mb", "[16, 1048576] MB"},
      {R"j({"wall_s": 1e10})j", "wall_s", "[0.001, 86400.0] s"},
      {R"j({"wall_s": 0})j", "wall_s", "[0.001, 86400.0] s"},
      {R"j({"wall_s": -1})j", "wall_s", "[0.001, 86400.0] s"},
      {R"j({"cpu_s": 0})j", "cpu_s", "[0.001, 86400.0] s"},
      {R"j({"cpu_s": 1e300})j", "cpu_s", "[0.001, 86400.0] s"},
      {R"j({"max_processes": 0})j", "max_processes", "[1, 65536] processes"},
      {R"j({"max_processes": -1})j", "max_processes", "[1, 65536] processes"},
      {R"j({"output_kb": 0})j", "output_kb", "[1, 1048576] KB"},
      {R"j({"file_size_kb": -1})j", "file_size_kb", "[64, 1073741824] KB"},
      {R"j({"open_files": 3})j", "open_files", "[16, 1048576] files"},
      {R"j({"workdir_kb": 0})j", "workdir_kb", "[64, 1073741824] KB"},
  };
  for (const auto& c : cases) {
    INFO(c.limits);
    json doc = {{"default_limits", json::parse(c.limits)}};
    try {
      retort::parse_config<ExecutorConfig>(doc, "test.json");
      FAIL("accepted");
    } catch (const retort::Error& e) {
      std::string m = e.what();
      INFO(m);
      CHECK(m.find(std::string("'") + c.key + "'") != std::string::npos);
      CHECK(m.find(c.range) != std::string::npos);
    }
    // The same limits in a job line, and built in code: named the same way.
    json job = {{"language", "python"}, {"source", "print(1)"}, {"limits", json::parse(c.limits)}};
    CHECK_THROWS_WITH(job_from_json(job, "stdin:1"), Catch::Contains(c.key) && Catch::Contains(c.range));
  }
  // The ends of each range are valid.
  json ends = {{"wall_s", 86400}, {"cpu_s", 0.001}, {"memory_mb", 16}, {"output_kb", 1}, {"max_processes", 1},
               {"file_size_kb", 64}, {"open_files", 16}, {"workdir_kb", 64}};
  auto cfg = retort::parse_config<ExecutorConfig>(json{{"default_limits", ends}}, "t");
  CHECK(cfg.default_limits.memory_mb == 16);
  CHECK(cfg.default_limits.out_of_range().empty());
  CHECK(Limits{}.out_of_range().empty());
  Limits l;
  l.memory_mb = -5;
  CHECK(l.out_of_range() == "limit memory_mb = -5 is outside [16, 1048576] MB");
  l = Limits{};
  l.wall_s = std::nan("");
  CHECK(l.out_of_range().find("wall_s") != std::string::npos);
}

TEST_CASE("Executor refuses a bad config", "[unit]") {
  ExecutorConfig cfg;
  cfg.queue_capacity = 0;
  CHECK_THROWS_AS(Executor(cfg), retort::Error);
  cfg.queue_capacity = 4;
  cfg.isolation = "none";
  CHECK_THROWS_AS(Executor(cfg), retort::Error);
}

TEST_CASE("run_jobs_jsonl answers one result per line, in order, bad lines in place", "[sandbox]") {
  std::string input =
      R"j({"language":"python","source":"import time\ntime.sleep(0.5)\nprint('first')"})j" "\n"
      R"j({"language":"python","source":"print(input()[::-1])","stdin":"abc\n"})j" "\n"
      "\n"
      "this is not json\n"
      R"j({"language":"python","source":"while True: pass","limits":{"wall_s":1}})j" "\n"
      R"j({"language":"cpp","source":"#include <cstdio>\nint main(){puts(\"cc\");}"})j" "\n"
      R"j({"language":"python","sauce":"x"})j" "\n";
  std::istringstream in(input);
  std::ostringstream out;
  ExecutorConfig cfg;
  cfg.workers = 3;
  int bad = run_jobs_jsonl(in, out, cfg);
  CHECK(bad == 2);
  std::istringstream lines(out.str());
  std::vector<json> results;
  for (std::string line; std::getline(lines, line);) results.push_back(json::parse(line));
  REQUIRE(results.size() == 6);  // the blank line is skipped
  CHECK(results[0]["status"] == "ok");
  CHECK(results[0]["stdout"] == "first\n");
  CHECK(results[1]["stdout"] == "cba\n");
  CHECK(results[2]["status"] == "sandbox_error");
  CHECK(results[2]["detail"].get<std::string>().find("stdin:4") != std::string::npos);
  CHECK(results[3]["status"] == "time_limit");
  CHECK(results[4]["stdout"] == "cc\n");
  CHECK(results[5]["status"] == "sandbox_error");
  CHECK(results[5]["detail"].get<std::string>().find("stdin:7") != std::string::npos);
  CHECK(results[5]["detail"].get<std::string>().find("sauce") != std::string::npos);
}
