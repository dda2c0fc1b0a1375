// Config: typed binding, unknown keys, wrong types, overrides, comments, atomic writes.
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>

#include <unistd.h>

#include "common/config.h"
#include "common/run_dir.h"
#include "error_of.h"  // defines: error_of

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
