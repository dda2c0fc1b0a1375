// Plugins: a shared library exporting retort_register_verifiers, the external process
// verifier (restarts, timeouts, protocol errors), and the `retort verify` JSONL loop
// (rewards/plugin.h, rewards/external.h, rewards/verify_jsonl.h).
#include <catch2/catch.hpp>

#include <cmath>    // defines: std::isnan
#include <sstream>  // defines: std::istringstream, std::ostringstream

#include "rewards/combine.h"       // defines: RewardSet
#include "rewards/external.h"      // defines: make_external_verifier
#include "rewards/plugin.h"        // defines: load_plugin
#include "rewards/verify_jsonl.h"  // defines: verify_jsonl
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

using namespace retort::rewards;
using json = nlohmann::json;

namespace {
const std::string kFixtures = std::string(RETORT_SOURCE_DIR) + "/tests/rewards/fixtures";
}

TEST_CASE("plugin: the example shared library registers a working verifier", "[unit]") {
  Registry r = builtin_registry();
  REQUIRE_FALSE(r.contains("keyword"));
  load_plugin(RETORT_EXAMPLE_PLUGIN, r);
  REQUIRE(r.contains("keyword"));
  VerifierContext ctx;
  auto v = r.create("keyword", {{"keyword", "Paris"}}, ctx);
  struct Case {
    const char* completion;
    json row;
    double reward;
  };
  const Case cases[] = {
      {"<think>maybe paris</think>It is Paris.", json::object(), 1.0},
      {"<think>Paris?</think>It is Lyon.", json::object(), 0.0},  // the reasoning is not graded
      {"it is PARIS", json::object(), 1.0},                     // case-insensitive by default
      {"It is Rome.", {{"keyword", "Rome"}}, 1.0},              // the row's keyword wins
  };
  for (const auto& c : cases) {
    INFO(c.completion);
    Sample s{"", c.completion, c.row};
    Score sc = v->verify(s);
    CHECK(sc.reward == c.reward);
  }
  auto no_kw = r.create("keyword", json::object(), ctx);
  json empty = json::object();
  CHECK_FALSE(no_kw->verify(Sample{"", "text", empty}).applicable());
  CHECK_THROWS(r.create("keyword", {{"kw", "x"}}, ctx));  // bad args rejected by the plugin
  // Loading it twice registers "keyword" twice: an error naming the library.
  CHECK_THROWS_AS(load_plugin(RETORT_EXAMPLE_PLUGIN, r), retort::Error);
  // A missing file or a library without the entry point is an error naming the path.
  CHECK_THROWS_AS(load_plugin("/nonexistent/plugin.so", r), retort::Error);
  CHECK_THROWS_AS(load_plugin("libm.so.6", r), retort::Error);
}

TEST_CASE("plugin: loaded from the config by RewardSet", "[unit]") {
  RewardsConfig cfg;
  cfg.plugins = {RETORT_EXAMPLE_PLUGIN};
  cfg.verifiers = {VerifierSpec{"keyword", 1.0, {{"keyword", "yes"}}}};
  RewardSet set(cfg, builtin_registry());
  ScoreInput a, b;
  a.completion = "yes indeed";
  b.completion = "no";
  RewardTable t = set.score({a, b});
  CHECK(t.reward(0, 0) == 1.0);
  CHECK(t.reward(1, 0) == 0.0);
}

TEST_CASE("external: the example process verifier over the JSON-lines protocol", "[unit]") {
  ExternalVerifierOptions o;
  o.command = {"python3", RETORT_EXAMPLE_EXTERNAL};
  o.processes = 2;
  auto v = make_external_verifier(o);
  struct Case {
    const char* completion;
    json row;
    double reward;
  };
  const double NA = std::nan("");
  const Case cases[] = {
      {"<think>long long long</think>one two three", {{"max_words", 5}}, 1.0},
      {"one two three four five six seven eight nine ten", {{"max_words", 5}}, 0.0},
      {"one two three four five six", {{"max_words", 5}}, 0.8},
      {"anything", json::object(), NA},
  };
  for (const auto& c : cases) {
    INFO(c.completion);
    Score sc = v->verify(Sample{"", c.completion, c.row});
    if (std::isnan(c.reward)) {
      CHECK_FALSE(sc.applicable());
    } else {
      CHECK(sc.reward == Approx(c.reward));
      CHECK(sc.detail["external"].contains("words"));
    }
  }
}

TEST_CASE("external: crashes restart the process, hangs time out, garbage is an error", "[unit]") {
  ExternalVerifierOptions o;
  o.command = {"python3", kFixtures + "/misbehaving_verifier.py"};
  o.processes = 1;
  o.timeout_s = 1.0;
  auto v = make_external_verifier(o);
  json row = json::object();
  auto run = [&](const char* c) { return v->verify(Sample{"", c, row}); };
  Score first = run("abc");
  REQUIRE(first.reward == 3.0);
  int pid = first.detail["external"]["pid"];
  CHECK(run("abcd").detail["external"]["served"] == 2);  // the same long-lived process
  Score crash = run("crash");
  CHECK(crash.reward == 0.0);
  CHECK(crash.detail["error"].get<std::string>().find("exited with status 3") != std::string::npos);
  Score after = run("ab");
  CHECK(after.reward == 2.0);
  CHECK(after.detail["external"]["served"] == 1);  // a fresh process
  CHECK(after.detail["external"]["pid"] != pid);
  Score hang = run("hang");
  CHECK(hang.reward == 0.0);
  CHECK(hang.detail["error"].get<std::string>().find("timed out") != std::string::npos);
  CHECK(run("abcde").reward == 5.0);  // restarted after the hang
  Score garbage = run("garbage");
  CHECK(garbage.reward == 0.0);
  CHECK(garbage.detail["error"].get<std::string>().find("not JSON") != std::string::npos);
  CHECK_FALSE(run("null").applicable());
  // A command that does not exist fails every sample with a reason, not an exception.
  ExternalVerifierOptions missing;
  missing.command = {"/nonexistent/verifier"};
  auto m = make_external_verifier(missing);
  CHECK(m->verify(Sample{"", "x", row}).reward == 0.0);
}

TEST_CASE("verify_jsonl: one score per sample line, in order", "[unit]") {
  std::istringstream in(
      "{\"completion\": \"<think>x</think>\\\\boxed{4}\", \"answer\": \"4\"}\n"
      "\n"
      "{\"completion\": \"\\\\boxed{5}\", \"answer\": \"4\"}\n"
      "{\"completion\": \"The answer is 18.\", \"answer\": \"Sells 9.\\n#### 18\"}\n"
      "{\"completion\": \"\\\\boxed{1}\", \"tests\": []}\n");
  std::ostringstream out;
  VerifyCliOptions opt;
  opt.name = "math";
  opt.batch = 2;  // several batches
  CHECK(verify_jsonl(in, out, opt) == 4);
  std::istringstream lines(out.str());
  std::string line;
  std::vector<json> got;
  while (std::getline(lines, line)) got.push_back(json::parse(line));
  REQUIRE(got.size() == 4);
  CHECK(got[0]["reward"] == 1.0);
  CHECK(got[0]["passed"] == true);
  CHECK(got[0]["detail"]["extracted"] == "4");
  CHECK(got[1]["reward"] == 0.0);
  CHECK(got[2]["reward"] == 1.0);
  CHECK(got[3]["reward"].is_null());  // not applicable
  // Bad lines name the line number.
  for (const char* bad : {"{\"answer\": \"4\"}\n", "not json\n", "[1, 2]\n"}) {
    std::istringstream bin(std::string("{\"completion\": \"x\", \"answer\": \"1\"}\n") + bad);
    std::ostringstream bout;
    try {
      verify_jsonl(bin, bout, opt);
      FAIL("no error for " << bad);
    } catch (const retort::Error& e) {
      CHECK(std::string(e.what()).find("stdin:2") != std::string::npos);
    }
  }
  // With a plugin and args.
  std::istringstream kin("{\"completion\": \"Paris\"}\n{\"completion\": \"Rome\"}\n");
  std::ostringstream kout;
  VerifyCliOptions kopt;
  kopt.name = "keyword";
  kopt.args = {{"keyword", "paris"}};
  kopt.plugins = {RETORT_EXAMPLE_PLUGIN};
  verify_jsonl(kin, kout, kopt);
  CHECK(kout.str() == "{\"detail\":{\"found\":true,\"keyword\":\"paris\"},\"passed\":true,\"reward\":1.0}\n"
                      "{\"detail\":{\"found\":false,\"keyword\":\"paris\"},\"passed\":false,\"reward\":0.0}\n");
}
