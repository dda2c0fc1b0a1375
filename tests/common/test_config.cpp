// Config: typed binding, unknown keys, wrong types, overrides, comments, atomic writes.
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>

#include <unistd.h>

#include "common/config.h"
#include "common/run_dir.h"
#include "error_of.h"  // defines: error_of
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

using retort::json;

namespace {

struct OptimCfg {
  double lr = 1e-3;
  int64_t warmup = 10;
  std::string schedule = "cosine";
  void bind(retort::ConfigBinder& b) {
    b.field("lr", lr);
    b.field("warmup", warmup);
    b.choice("schedule", schedule, {"cosine", "constant", "linear"});
  }
};

struct RunCfg {
  std::string name = "demo";
  bool resume = true;
  std::vector<int> layers;
  OptimCfg optim;
  std::map<std::string, double> weights;
  void bind(retort::ConfigBinder& b) {
    b.field("name", name);
    b.field("resume", resume);
    b.field("layers", layers);
    b.field("optim", optim);
    b.field("weights", weights);
  }
};

}  // namespace

TEST_CASE("config binds typed fields and keeps defaults", "[unit]") {
  json doc = retort::parse_json_text(R"({
    // a comment
    "name": "run1", /* another */
    "layers": [1, 2, 3],
    "optim": {"lr": 0.5},
    "weights": {"math": 1.0, "format": 0.25}
  })", "test.json");
  RunCfg cfg = retort::parse_config<RunCfg>(doc, "test.json");
  CHECK(cfg.name == "run1");
  CHECK(cfg.resume == true);
  CHECK(cfg.layers == std::vector<int>{1, 2, 3});
  CHECK(cfg.optim.lr == 0.5);
  CHECK(cfg.optim.warmup == 10);
  CHECK(cfg.weights.at("format") == 0.25);
}

TEST_CASE("config rejects unknown keys naming key, file and allowed keys", "[unit]") {
  json doc = json::parse(R"({"optim": {"lr_max": 0.5}})");
  std::string msg = error_of([&] { retort::parse_config<RunCfg>(doc, "configs/x.json"); });
  CHECK(msg.find("optim.lr_max") != std::string::npos);
  CHECK(msg.find("configs/x.json") != std::string::npos);
  CHECK(msg.find("lr, schedule, warmup") != std::string::npos);
}

TEST_CASE("config suggests the closest key", "[unit]") {
  json doc = json::parse(R"({"nmae": "x"})");
  std::string msg = error_of([&] { retort::parse_config<RunCfg>(doc, "a.json"); });
  CHECK(msg.find("did you mean 'name'") != std::string::npos);
}

TEST_CASE("config rejects wrong types and values outside a choice", "[unit]") {
  CHECK(error_of([] { retort::parse_config<RunCfg>(json::parse(R"({"optim": {"lr": "big"}})"), "a.json"); })
            .find("expected a number") != std::string::npos);
  CHECK(error_of([] { retort::parse_config<RunCfg>(json::parse(R"({"optim": {"warmup": 1.5}})"), "a.json"); })
            .find("expected an integer") != std::string::npos);
  std::string msg = error_of([] { retort::parse_config<RunCfg>(json::parse(R"({"optim": {"schedule": "cosin"}})"), "a.json"); });
  CHECK(msg.find("one of: cosine, constant, linear") != std::string::npos);
  CHECK(msg.find("did you mean 'cosine'") != std::string::npos);
}

TEST_CASE("config overrides set nested values and are checked like file keys", "[unit]") {
  json doc = json::parse(R"({"optim": {"lr": 0.5}})");
  retort::apply_override(doc, "optim.lr=0.25");
  retort::apply_override(doc, "optim.schedule=linear");  // bare word becomes a string
  retort::apply_override(doc, "layers=[4,5]");
  RunCfg cfg = retort::parse_config<RunCfg>(doc, "a.json");
  CHECK(cfg.optim.lr == 0.25);
  CHECK(cfg.optim.schedule == "linear");
  CHECK(cfg.layers == std::vector<int>{4, 5});
  retort::apply_override(doc, "optim.typo=1");
  CHECK(error_of([&] { retort::parse_config<RunCfg>(doc, "a.json"); }).find("optim.typo") != std::string::npos);
  CHECK(error_of([&] { retort::apply_override(doc, "noequals"); }).find("key.sub=value") != std::string::npos);
}

TEST_CASE("config round-trips through JSON", "[unit]") {
  RunCfg cfg;
  cfg.name = "x";
  cfg.optim.lr = 0.125;
  cfg.weights["m"] = 2;
  json j = retort::config_to_json(cfg);
  RunCfg back = retort::parse_config<RunCfg>(j, "resolved");
  CHECK(back.name == "x");
  CHECK(back.optim.lr == 0.125);
  CHECK(back.weights.at("m") == 2);
  CHECK(j["optim"]["schedule"] == "cosine");
}

TEST_CASE("JSON syntax errors name file, line and column", "[unit]") {
  std::string msg = error_of([] { retort::parse_json_text("{\n  \"a\": 1,\n  \"b\": }\n", "bad.json"); });
  CHECK(msg.find("bad.json") != std::string::npos);
  CHECK(msg.find("line 3") != std::string::npos);
  CHECK(error_of([] { retort::load_json_file("/nonexistent/x.json"); }).find("/nonexistent/x.json") !=
        std::string::npos);
}

TEST_CASE("atomic writes replace the file and leave no temporary", "[unit]") {
  std::string path = std::string(RETORT_BINARY_DIR) + "/atomic_test.json";
  retort::write_json_file_atomic(path, json{{"a", 1}});
  retort::write_json_file_atomic(path, json{{"a", 2}});
  CHECK(retort::load_json_file(path)["a"] == 2);
  std::ifstream tmp(path + ".tmp." + std::to_string(::getpid()));
  CHECK_FALSE(tmp.good());
  std::remove(path.c_str());
}

TEST_CASE("run directory is created and keeps the resolved config", "[unit]") {
  std::string dir = std::string(RETORT_BINARY_DIR) + "/test_runs/a/b";
  retort::RunDir run(dir + "/");
  CHECK(run.path() == dir);
  run.save_resolved_config(json{{"optim", {{"lr", 0.5}}}});
  CHECK(retort::load_json_file(run.file("config.resolved.json"))["optim"]["lr"] == 0.5);
  CHECK(run.checkpoint(12) == dir + "/checkpoints/step-12");
  CHECK_THROWS_AS(retort::RunDir(run.file("config.resolved.json")), retort::Error);
}

namespace {
struct RangedCfg {
  int batch = 8;
  int64_t steps = 100;
  double lr = 1e-3, ratio = 0.1, dual_clip = 0.0;
  void bind(retort::ConfigBinder& b) {
    b.field("batch", batch, retort::Range::at_least(1));
    b.field("steps", steps, retort::Range::at_least(1));
    b.field("lr", lr, retort::Range::at_least(0).up_to(1));
    b.field("ratio", ratio, retort::Range::at_least(0).below(1));
    b.field("dual_clip", dual_clip, retort::Range::above(1).or_off(0));
  }
};
}  // namespace

TEST_CASE("config ranges: one error naming the key, the value and the range", "[unit]") {
  struct Row {
    std::string key;
    json value;
    bool ok;
    std::string message;  // part of the error when refused
  };
  // Expected messages written from the ranges declared above, not from the implementation.
  const std::vector<Row> rows = {
      {"batch", 1, true, ""},
      {"batch", 0, false, "config key 'batch' is out of range (expected >= 1, got 0)"},
      {"batch", 4294967298LL, false, "config key 'batch' is out of range (expected an integer in [-2147483648, 2147483647], got 4294967298)"},
      {"steps", 18446744073709551615ULL, false, "config key 'steps' is out of range (expected an integer below 2^63, got 18446744073709551615)"},
      {"lr", 0.0, true, ""},
      {"lr", 1.0, true, ""},
      {"lr", -1e-3, false, "config key 'lr' is out of range (expected in [0, 1], got -0.001)"},
      {"lr", 1e308, false, "config key 'lr' is out of range (expected in [0, 1], got 1e+308)"},
      {"ratio", 0.999, true, ""},
      {"ratio", 1.0, false, "(expected in [0, 1), got 1)"},
      {"dual_clip", 0.0, true, ""},
      {"dual_clip", 3.0, true, ""},
      {"dual_clip", 1.0, false, "config key 'dual_clip' is out of range (expected > 1, or 0 (off), got 1)"},
      {"dual_clip", 0.5, false, "(expected > 1, or 0 (off), got 0.5)"},
  };
  for (const auto& row : rows) {
    json doc = {{row.key, row.value}};
    INFO(row.key << " = " << row.value.dump());
    if (row.ok) {
      CHECK_NOTHROW(retort::parse_config<RangedCfg>(doc, "x.json"));
    } else {
      CHECK_THROWS_WITH(retort::parse_config<RangedCfg>(doc, "x.json"),
                        Catch::StartsWith("x.json: ") && Catch::Contains(row.message) && Catch::Contains("pass " + row.key + "=VALUE"));
    }
  }
  // An override reaches the same check.
  json doc = json::object();
  retort::apply_override(doc, "batch=4294967298");
  CHECK_THROWS_WITH(retort::parse_config<RangedCfg>(doc, "x.json"), Catch::Contains("'batch' is out of range"));
}

TEST_CASE("config differences name each changed key with both values", "[unit]") {
  json then = {{"steps", 1600}, {"loss", {{"beta", 0.05}, {"eps_low", 0.2}}}};
  json now = {{"steps", 7}, {"loss", {{"beta", 0.1}, {"eps_low", 0.2}}}};
  CHECK(retort::config_differences(then, now, "grpo.") == "grpo.loss.beta: 0.05 then, 0.1 now; grpo.steps: 1600 then, 7 now");
  CHECK(retort::config_differences(then, then) == "");
}

TEST_CASE("run directory: empty or root refused, one run at a time", "[unit]") {
  CHECK_THROWS_WITH(retort::RunDir(""), Catch::Contains("config key 'run_dir' is empty"));
  CHECK_THROWS_WITH(retort::RunDir("/"), Catch::Contains("config key 'run_dir' resolves to the root folder"));
  CHECK_THROWS_WITH(retort::RunDir("/tmp/../"), Catch::Contains("resolves to the root folder"));
  const std::string dir = std::string(RETORT_BINARY_DIR) + "/test_runs/run_dir_lock";
  {
    retort::RunDir first(dir);
    // A second open file description of run.lock conflicts even in the same process.
    CHECK_THROWS_WITH(retort::RunDir(dir), Catch::Contains("in use by another retort run (pid " + std::to_string(::getpid()) + ")"));
    retort::RunDir unlocked(dir, /*lock=*/false);  // a data-parallel rank other than 0
    CHECK(unlocked.path() == dir);
  }
  CHECK_NOTHROW(retort::RunDir(dir));  // released with its holder
}
