// SFT: a tiny model learns the traces (loss falls), and a run killed with SIGKILL and
// resumed writes the same losses as an uninterrupted run.
#include <cmath>
#include <filesystem>
#include <fstream>

#include "common/config.h"
#include "common/error.h"
#include "data/traces.h"
#include "model/checkpoint.h"
#include "tokenizer/tokenizer.h"
#include "train/sft.h"
#include "run_cli.h"  // defines: run_cli_config, run_uninterrupted_and_killed
#include "tiny_model.h"  // defines: tiny_model_config, tiny_tokenizer_path
#include "jsonl_files.h"  // defines: write_jsonl

#include <catch2/catch.hpp>
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kBin = RETORT_BINARY_DIR;

// Arithmetic traces in R1 style, written into the build folder.
std::string write_traces(const std::string& name, int n) {
  std::vector<json> rows;
  for (int i = 0; i < n; ++i) {
    int a = (i * 7) % 10, b = (i * 3 + 1) % 10;
    json line = {{"prompt", "What is " + std::to_string(a) + "+" + std::to_string(b) + "?"},
                 {"completion", "<think>\n" + std::to_string(a) + "+" + std::to_string(b) + "=" + std::to_string(a + b) +
                                    "\n</think>\nThe answer is \\boxed{" + std::to_string(a + b) + "}."}};
    rows.push_back(line);
  }
  return write_jsonl(name, rows);
}

json tiny_config(const std::string& run_dir, const std::string& traces) {
  return json{{"run_dir", run_dir},
              {"model_config", tiny_model_config()},
              {"tokenizer", tiny_tokenizer_path()},
              {"runtime", {{"threads", 1}, {"seed", 7}, {"device", "cpu"}}},
              {"data", {{"train", traces}, {"chat_template", "chatml"}, {"max_length", 128}, {"valid_fraction", 0.1}}},
              {"optim", {{"lr", 3e-3}, {"warmup_steps", 5}, {"min_lr_ratio", 0.1}}},
              {"steps", 60},
              {"batch_size", 8},
              {"grad_accum", 1},
              {"eval_every", 20},
              {"save_every", 10},
              {"keep_last", 2}};
}

std::vector<std::pair<int64_t, double>> read_losses(const std::string& metrics) {
  std::vector<std::pair<int64_t, double>> out;
  std::ifstream f(metrics);
  std::string line;
  while (std::getline(f, line)) {
    auto j = json::parse(line);
    out.emplace_back(j["step"].get<int64_t>(), j["loss"].get<double>());
  }
  return out;
}

}  // namespace

TEST_CASE("sft: a tiny model learns arithmetic traces and writes a loadable checkpoint", "[train]") {
  std::string run = kBin + "/test_runs/sft_learn";
  fs::remove_all(run);
  json cfg = tiny_config(run, write_traces("sft_traces.jsonl", 96));
  retort::SftResult r = retort::run_sft(cfg, "test");
  REQUIRE(r.losses.size() == 60);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += r.losses[i] / 5, last += r.losses[55 + i] / 5;
  INFO("first-5 mean " << first << ", last-5 mean " << last);
  CHECK(last < 0.6 * first);
  CHECK(r.final_valid_loss < first);
  CHECK(fs::exists(r.output_dir + "/model.safetensors"));
  CHECK(fs::exists(r.output_dir + "/tokenizer.json"));
  CHECK(fs::exists(run + "/config.resolved.json"));
  // keep_last = 2: only the two newest checkpoints stay.
  int n = 0;
  for (auto& e : fs::directory_iterator(run + "/checkpoints")) n += e.path().filename().string().rfind("step-", 0) == 0;
  CHECK(n == 2);
  CHECK(fs::exists(run + "/checkpoints/step-60/optimizer.safetensors"));
}

TEST_CASE("sft: config errors name the key", "[train]") {
  json cfg = tiny_config(kBin + "/test_runs/sft_bad", write_traces("sft_traces_bad.jsonl", 4));
  cfg["optim"]["learning_rate"] = 1.0;
  CHECK_THROWS_WITH(retort::run_sft(cfg, "bad.json"), Catch::Contains("optim.learning_rate") && Catch::Contains("bad.json"));
  cfg = tiny_config(kBin + "/test_runs/sft_bad", write_traces("sft_traces_bad.jsonl", 4));
  CHECK_THROWS_WITH(retort::run_sft(cfg, "bad.json", {"data.truncation=chop"}), Catch::Contains("drop, cut"));
}

TEST_CASE("sft: a run killed with SIGKILL resumes and reproduces the uninterrupted losses", "[train]") {
  std::string traces = write_traces("sft_traces_resume.jsonl", 64);
  std::string bin = kBin + "/retort";
  REQUIRE(fs::exists(bin));
  auto run_cli = [&](const std::string& run_dir, bool kill_after_checkpoint) {
    json cfg = tiny_config(run_dir, traces);
    cfg["steps"] = 40;
    cfg["eval_every"] = 0;
    // Killed as soon as the step-10 checkpoint is complete: the run is mid-way.
    return run_cli_config(bin, "sft", cfg, run_dir, kill_after_checkpoint ? run_dir + "/checkpoints/step-10/trainer_state.json" : "");
  };
  std::string a = kBin + "/test_runs/sft_uninterrupted", b = kBin + "/test_runs/sft_killed";
  run_uninterrupted_and_killed(run_cli, a, b);
  auto partial = read_losses(b + "/metrics.jsonl");
  CHECK(partial.size() < 40);
  CHECK(run_cli(b, false) == 0);  // resumes from the newest checkpoint

  auto la = read_losses(a + "/metrics.jsonl"), lb = read_losses(b + "/metrics.jsonl");
  REQUIRE(la.size() == 40);
  REQUIRE(lb.size() == 40);
  for (size_t i = 0; i < la.size(); ++i) {
    CHECK(lb[i].first == la[i].first);
    CHECK(lb[i].second == la[i].second);  // bit-identical on CPU with a fixed seed
  }
}

TEST_CASE("distill: each teacher-guided loss falls when trained alone; the schedule and mismatches", "[train]") {
  std::string traces = write_traces("distill_traces.jsonl", 64);
  // A wider, deeper teacher, trained briefly by SFT.
  std::string teacher_run = kBin + "/test_runs/distill_teacher";
  fs::remove_all(teacher_run);
  json tcfg = tiny_config(teacher_run, traces);
  tcfg["model_config"]["hidden_size"] = 48;
  tcfg["model_config"]["num_hidden_layers"] = 3;
  tcfg["steps"] = 30;
  tcfg["eval_every"] = 0;
  std::string teacher = retort::run_sft(tcfg, "teacher").output_dir;

  auto student_cfg = [&](const std::string& name, json phases) {
    std::string run = kBin + "/test_runs/distill_" + name;
    fs::remove_all(run);
    json c = tiny_config(run, traces);
    c["steps"] = 30;
    c["eval_every"] = 0;
    c["distill"] = {{"teacher", teacher},
                    {"logit", {{"kind", "forward_kl"}, {"temperature", 2.0}}},
                    {"feature", {{"layer_map", {{"1", 1}, {"2", 3}}}, {"kind", "mse"}}},
                    {"attention", {{"layer_map", {{"0", 0}, {"1", 2}}}, {"heads", "mapped"}}},
                    {"schedule", {{"mode", "phases"}, {"phases", phases}}}};
    return c;
  };
  for (const char* loss : {"logit", "feature", "attention"}) {
    auto r = retort::run_sft(student_cfg(loss, json::array({{{"steps", 30}, {"weights", {{loss, 1.0}}}}})), "student");
    REQUIRE(r.parts.size() == 30);
    double first = r.parts.front().at(loss), last = r.parts.back().at(loss);
    INFO(loss << ": first " << first << ", last " << last);
    CHECK(std::isfinite(first));
    CHECK(last < 0.8 * first);
  }
  // Progressive: structure, then feature, then logic; the active weights are logged.
  json phases = json::array({{{"steps", 4}, {"weights", {{"ce", 1.0}, {"attention", 1.0}}}},
                             {{"steps", 4}, {"weights", {{"ce", 1.0}, {"feature", 1.0}}}},
                             {{"steps", 4}, {"weights", {{"ce", 1.0}, {"logit", 1.0}}}}});
  json pc = student_cfg("progressive", phases);
  pc["steps"] = 12;
  auto r = retort::run_sft(pc, "student");
  CHECK(r.parts[0].count("attention") == 1);
  CHECK(r.parts[0].count("logit") == 0);
  CHECK(r.parts[5].count("feature") == 1);
  CHECK(r.parts[11].count("logit") == 1);
  std::ifstream m(kBin + "/test_runs/distill_progressive/metrics.jsonl");
  std::string first_line;
  std::getline(m, first_line);
  CHECK(json::parse(first_line)["weight_attention"] == 1.0);

  // A bad layer map and an unknown loss name fail with the key.
  json bad = student_cfg("bad", phases);
  bad["distill"]["feature"]["layer_map"] = {{"9", 1}};
  CHECK_THROWS_WITH(retort::run_sft(bad, "s.json"), Catch::Contains("distill.feature.layer_map"));
  bad = student_cfg("bad", json::array({{{"steps", 4}, {"weights", {{"logits", 1.0}}}}}));
  CHECK_THROWS_WITH(retort::run_sft(bad, "s.json"), Catch::Contains("did you mean 'logit'"));
  // A teacher with another vocabulary is refused.
  std::string other_run = kBin + "/test_runs/distill_other";
  fs::remove_all(other_run);
  json oc = tiny_config(other_run, traces);
  oc["model_config"]["vocab_size"] = 640;
  oc["steps"] = 1;
  oc["eval_every"] = 0;
  std::string other = retort::run_sft(oc, "other").output_dir;
  bad = student_cfg("bad", phases);
  bad["distill"]["teacher"] = other;
  CHECK_THROWS_WITH(retort::run_sft(bad, "s.json"), Catch::Contains("different vocabulary sizes"));
}

TEST_CASE("distill: offline teacher_topk from the trace file matches the online top-k loss", "[train]") {
  std::string plain = write_traces("offline_plain.jsonl", 32);
  std::string teacher_run = kBin + "/test_runs/offline_teacher";
  fs::remove_all(teacher_run);
  json tcfg = tiny_config(teacher_run, plain);
  tcfg["model_config"]["hidden_size"] = 48;
  tcfg["steps"] = 20;
  tcfg["eval_every"] = 0;
  std::string teacher = retort::run_sft(tcfg, "teacher").output_dir;

  // Write the teacher's top-8 for every completion token into the traces, as an API teacher would.
  const int K = 8;
  auto tok = retort::Tokenizer::from_file(tiny_tokenizer_path());
  auto model = retort::load_model(teacher, retort::LoadOptions{"cpu", "float32"});
  model->eval();
  retort::TraceDataOptions opt;
  opt.chat_template = "chatml";
  opt.max_length = 128;
  std::string with_topk = kBin + "/offline_topk.jsonl";
  std::vector<json> lines;
  {
    std::ifstream in(plain);
    std::string line;
    while (std::getline(in, line)) lines.push_back(json::parse(line));
  }
  {
    torch::NoGradGuard ng;
    std::ofstream out(with_topk);
    for (size_t i = 0; i < lines.size(); ++i) {
      retort::TokenizedSample ts;
      REQUIRE(retort::tokenize_trace(retort::parse_trace(lines[i], "x"), tok, opt, ts));
      auto ids = torch::tensor(std::vector<int64_t>(ts.ids.begin(), ts.ids.end())).unsqueeze(0);
      auto logp = torch::log_softmax(model->forward(ids, torch::ones_like(ids)).logits[0], -1);  // [T, V]
      json topk = json::array();
      for (int64_t p = ts.prompt_length; p < static_cast<int64_t>(ts.ids.size()); ++p) {
        auto top = logp[p - 1].topk(K);
        auto v = std::get<0>(top), ix = std::get<1>(top);
        json e = {{"ids", json::array()}, {"logprobs", json::array()}};
        for (int k = 0; k < K; ++k) {
          e["ids"].push_back(ix[k].item<int64_t>());
          e["logprobs"].push_back(v[k].item<double>());
        }
        topk.push_back(e);
      }
      lines[i]["teacher_topk"] = topk;
      lines[i]["id"] = "t" + std::to_string(i);
      out << lines[i].dump() << "\n";
    }
  }

  auto student = [&](const std::string& name, int steps, bool online) {
    std::string run = kBin + "/test_runs/offline_" + name;
    fs::remove_all(run);
    json c = tiny_config(run, with_topk);
    c["steps"] = steps;
    c["eval_every"] = 0;
    c["distill"] = {{"teacher", online ? teacher : ""},
                    {"logit", {{"kind", online ? "topk" : "offline"}, {"top_k", K}, {"temperature", 2.0}}},
                    {"schedule", {{"mode", "phases"}, {"phases", json::array({{{"steps", steps}, {"weights", {{"logit", 1.0}}}}})}}}};
    return c;
  };
  // Same initial student, same batch: the stored top-k give the online top-k loss.
  auto off1 = retort::run_sft(student("one", 1, false), "s");
  auto on1 = retort::run_sft(student("online", 1, true), "s");
  INFO("offline " << off1.parts[0].at("logit") << ", online " << on1.parts[0].at("logit"));
  CHECK(off1.parts[0].at("logit") > 0);
  CHECK(off1.parts[0].at("logit") == Approx(on1.parts[0].at("logit")).epsilon(1e-3));
  // Trained on the stored distributions alone, the loss falls.
  auto r = retort::run_sft(student("train", 25, false), "s");
  double first = r.parts.front().at("logit"), last = r.parts.back().at("logit");
  INFO("offline logit loss: first " << first << ", last " << last);
  CHECK(last < 0.8 * first);

  // Misaligned top-k name the trace; a malformed entry names the file and line.
  lines[3]["teacher_topk"].erase(0);
  lines[3]["teacher_topk"].erase(0);
  std::string bad = kBin + "/offline_bad.jsonl";
  {
    std::ofstream out(bad);
    for (const auto& l : lines) out << l.dump() << "\n";
  }
  json c = student("bad", 1, false);
  c["data"]["train"] = bad;
  CHECK_THROWS_WITH(retort::run_sft(c, "s.json"), Catch::Contains("teacher_topk does not line up") && Catch::Contains("t3"));
  lines[3]["teacher_topk"][0]["logprobs"] = "x";
  {
    std::ofstream out(bad);
    for (const auto& l : lines) out << l.dump() << "\n";
  }
  CHECK_THROWS_WITH(retort::run_sft(c, "s.json"), Catch::Contains("offline_bad.jsonl:4") && Catch::Contains("teacher_topk entry 0"));
  // Offline without any teacher_topk is refused.
  c["data"]["train"] = plain;
  CHECK_THROWS_WITH(retort::run_sft(c, "s.json"), Catch::Contains("no training trace carries teacher_topk"));
}

TEST_CASE("distill: on-policy (GKD lambda) steps train on the student's own samples", "[train]") {
  std::string traces = write_traces("onpolicy_traces.jsonl", 32);
  std::string teacher_run = kBin + "/test_runs/onpolicy_teacher";
  fs::remove_all(teacher_run);
  json tcfg = tiny_config(teacher_run, traces);
  tcfg["model_config"]["hidden_size"] = 48;
  tcfg["steps"] = 30;
  tcfg["eval_every"] = 0;
  std::string teacher = retort::run_sft(tcfg, "teacher").output_dir;

  auto cfg = [&](const std::string& name, double lambda, int steps) {
    std::string run = kBin + "/test_runs/onpolicy_" + name;
    fs::remove_all(run);
    json c = tiny_config(run, traces);
    c["steps"] = steps;
    c["eval_every"] = 0;
    c["batch_size"] = 4;
    c["distill"] = {{"teacher", teacher},
                    {"logit", {{"kind", "jsd"}, {"beta", 0.5}, {"temperature", 1.0}}},
                    {"on_policy", lambda},
                    {"on_policy_max_new_tokens", 24},
                    {"schedule", {{"mode", "phases"}, {"phases", json::array({{{"steps", steps}, {"weights", {{"ce", 1.0}, {"logit", 1.0}}}}})}}}};
    return std::make_pair(c, run);
  };
  // lambda = 1: every step on-policy, the divergence on the student's samples falls.
  auto [c1, run1] = cfg("all", 1.0, 24);
  auto r = retort::run_sft(c1, "s");
  double first = 0, last = 0;
  for (int i = 0; i < 4; ++i) first += r.parts[i].at("logit") / 4, last += r.parts[20 + i].at("logit") / 4;
  INFO("on-policy jsd: first-4 mean " << first << ", last-4 mean " << last);
  CHECK(last < 0.8 * first);
  std::ifstream m(run1 + "/metrics.jsonl");
  std::string line;
  int on = 0, n = 0;
  while (std::getline(m, line)) {
    auto j = json::parse(line);
    on += j["on_policy"].get<int>();
    ++n;
    CHECK(j["weight_ce"] == 0.0);  // the weights in effect are logged: on-policy steps have no reference to imitate
    CHECK(j["weight_logit"] == 1.0);
  }
  CHECK(n == 24);
  CHECK(on == 24);
  // lambda = 0.5: a seeded mix of both kinds of step, the same on a second run.
  auto [c2, run2] = cfg("half", 0.5, 16);
  auto a = retort::run_sft(c2, "s");
  auto [c3, run3] = cfg("half_again", 0.5, 16);
  auto b = retort::run_sft(c3, "s");
  int on_steps = 0;
  std::ifstream mh(run2 + "/metrics.jsonl");
  while (std::getline(mh, line)) on_steps += json::parse(line)["on_policy"].get<int>();
  CHECK(on_steps > 0);
  CHECK(on_steps < 16);
  REQUIRE(a.losses.size() == b.losses.size());
  for (size_t i = 0; i < a.losses.size(); ++i) CHECK(a.losses[i] == b.losses[i]);
  // A share outside (0, 1] is refused with its key.
  c1["distill"]["on_policy"] = 1.5;
  CHECK_THROWS_WITH(retort::run_sft(c1, "s.json"), Catch::Contains("distill.on_policy") && Catch::Contains("1.5"));
}

TEST_CASE("sft + distill: one step's loss and gradient do not depend on how the batch is split", "[train]") {
  // Eight traces of different lengths, no validation split: every configuration trains the
  // same eight sequences in its one step, split differently.
  std::string traces = kBin + "/split_traces.jsonl";
  {
    std::ofstream f(traces);
    for (int i = 0; i < 8; ++i) {
      std::string pad(static_cast<size_t>(i), ' ');
      json line = {{"prompt", "What is " + std::to_string(i) + "+" + std::to_string(i + 1) + "? " + pad},
                   {"completion", "<think>\n" + pad + std::to_string(i) + "+" + std::to_string(i + 1) + "=" +
                                      std::to_string(2 * i + 1) + "\n</think>\nThe answer is \\boxed{" +
                                      std::to_string(2 * i + 1) + "}."}};
      f << line.dump() << "\n";
    }
  }
  std::string teacher_run = kBin + "/test_runs/split_teacher";
  fs::remove_all(teacher_run);
  json tcfg = tiny_config(teacher_run, traces);
  tcfg["model_config"]["hidden_size"] = 48;
  tcfg["model_config"]["num_hidden_layers"] = 3;
  tcfg["steps"] = 3;
  tcfg["eval_every"] = 0;
  tcfg["data"]["valid_fraction"] = 0.0;
  std::string teacher = retort::run_sft(tcfg, "teacher").output_dir;

  struct Split {
    std::string name;
    int batch_size, grad_accum;
    json train;
  };
  const std::vector<Split> splits = {
      {"whole", 8, 1, json::object()},
      {"accum4", 2, 4, json::object()},
      {"accum8", 1, 8, json::object()},
      {"packed", 8, 1, {{"micro_batch_tokens", 120}, {"packing", true}}},
      {"padded", 8, 1, {{"micro_batch_tokens", 120}, {"packing", false}}},
      {"ckpt", 4, 2, {{"activation_checkpointing", "on"}}},
  };
  for (bool distill : {false, true}) {
    std::vector<json> lines;
    for (const auto& s : splits) {
      std::string run = kBin + "/test_runs/split_" + s.name + (distill ? "_d" : "");
      fs::remove_all(run);
      json c = tiny_config(run, traces);
      c["steps"] = 1;
      c["eval_every"] = 0;
      c["data"]["valid_fraction"] = 0.0;
      c["batch_size"] = s.batch_size;
      c["grad_accum"] = s.grad_accum;
      c["optim"]["grad_clip"] = 0.0;
      if (!s.train.empty()) c["train"] = s.train;
      if (distill) {
        c["distill"] = {{"teacher", teacher},
                        {"logit", {{"kind", "jsd"}, {"temperature", 2.0}}},
                        {"feature", {{"layer_map", {{"1", 1}, {"2", 3}}}, {"kind", "mse"}}},
                        {"attention", {{"layer_map", {{"1", 2}}}, {"heads", "mapped"}}},
                        {"schedule", {{"phases", json::array({{{"steps", 1},
                                                               {"weights", {{"ce", 1.0}, {"logit", 0.5}, {"feature", 2.0}, {"attention", 3.0}}}}})}}}};
      }
      retort::run_sft(c, "split");
      std::ifstream m(run + "/metrics.jsonl");
      std::string line;
      std::getline(m, line);
      lines.push_back(json::parse(line));
    }
    for (size_t i = 1; i < splits.size(); ++i) {
      INFO((distill ? "distill, " : "sft, ") << splits[i].name << " vs " << splits[0].name);
      REQUIRE(lines[i]["tokens"] == lines[0]["tokens"]);  // the same eight sequences
      for (const char* key : {"loss", "grad_norm", "loss_ce", "loss_logit", "loss_feature", "loss_attention"}) {
        if (!lines[0].contains(key)) continue;
        INFO(key);
        CHECK(lines[i][key].get<double>() == Approx(lines[0][key].get<double>()).epsilon(1e-5));
      }
    }
    CHECK(lines[0].contains("peak_rss_mb"));
  }
}

TEST_CASE("sft + distill: tool observations are not trained on: changing them changes no loss or gradient", "[train]") {
  // Tool-using traces (the python format of rewards/tool_calls.h) whose completions end with the
  // tool's output block. Two files differ only in those outputs' digits: the observation tokens
  // are targets nowhere (loss mask 0) and, last in their sequence, context for no trained token,
  // so cross-entropy, the logit distillation loss and the gradient must be the same for both. The
  // control spells the block "```result" (not an observation, so trained on): there the same
  // change moves the loss.
  auto write = [](const std::string& name, const std::string& fence, bool flip) {
    std::vector<json> rows;
    for (int i = 0; i < 8; ++i) {
      const int a = 11 + 7 * i, b = 3 + i;
      std::string out = std::to_string(a + b);
      if (flip) std::swap(out[0], out[1]);
      rows.push_back({{"prompt", "What is " + std::to_string(a) + "+" + std::to_string(b) + "?"},
                      {"completion", "<think>\nI will run it.\n```python\nprint(" + std::to_string(a) + "+" + std::to_string(b) +
                                         ")\n```\n" + fence + "\n" + out + "\n```\n"}});
    }
    return write_jsonl(name, rows);
  };
  const std::string teacher_run = kBin + "/test_runs/obs_teacher";
  fs::remove_all(teacher_run);
  json tcfg = tiny_config(teacher_run, write("obs_teacher.jsonl", "```output", false));
  tcfg["model_config"]["hidden_size"] = 48;
  tcfg["data"]["chat_template"] = "plain";  // no end-of-turn token: the observation ends the sequence
  tcfg["data"]["valid_fraction"] = 0.0;
  tcfg["steps"] = 3;
  tcfg["eval_every"] = 0;
  const std::string teacher = retort::run_sft(tcfg, "teacher").output_dir;

  auto run = [&](const std::string& name, const std::string& traces, bool distill) {
    const std::string dir = kBin + "/test_runs/obs_" + name + (distill ? "_d" : "");
    fs::remove_all(dir);
    json c = tiny_config(dir, traces);
    c["data"]["chat_template"] = "plain";
    c["data"]["valid_fraction"] = 0.0;
    c["steps"] = 2;
    c["eval_every"] = 0;
    c["optim"]["grad_clip"] = 0.0;
    if (distill) {
      c["distill"] = {{"teacher", teacher},
                      {"logit", {{"kind", "forward_kl"}, {"temperature", 2.0}}},
                      {"schedule", {{"phases", json::array({{{"steps", 1}, {"weights", {{"ce", 1.0}, {"logit", 1.0}}}}})}}}};
    }
    retort::run_sft(c, "obs");
    std::vector<json> lines;
    std::ifstream m(dir + "/metrics.jsonl");
    for (std::string l; std::getline(m, l);) lines.push_back(json::parse(l));
    REQUIRE(lines.size() == 2);
    return lines;
  };
  for (bool distill : {false, true}) {
    INFO((distill ? "distill" : "sft"));
    auto a = run("a", write("obs_a.jsonl", "```output", false), distill);
    auto b = run("b", write("obs_b.jsonl", "```output", true), distill);
    for (size_t step = 0; step < 2; ++step) {
      INFO("step " << step + 1 << "\n" << a[step].dump() << "\n" << b[step].dump());
      REQUIRE(a[step]["tokens"] == b[step]["tokens"]);  // the flipped digits keep every sequence's length
      for (const char* key : {"loss", "grad_norm", "loss_ce", "loss_logit"}) {
        if (!a[step].contains(key)) continue;
        INFO(key);
        CHECK(b[step][key].get<double>() == Approx(a[step][key].get<double>()).epsilon(1e-9));
      }
    }
    auto ca = run("ctrl_a", write("obs_ctrl_a.jsonl", "```result", false), distill);
    auto cb = run("ctrl_b", write("obs_ctrl_b.jsonl", "```result", true), distill);
    // A near-uniform tiny model barely prefers one digit to another: the loss moves in its 5th
    // digit, the gradient in its 3rd; far beyond the 1e-9 the runs above agree to.
    CHECK(std::abs(cb[0]["loss"].get<double>() - ca[0]["loss"].get<double>()) > 1e-6 * ca[0]["loss"].get<double>());
    CHECK(std::abs(cb[0]["grad_norm"].get<double>() - ca[0]["grad_norm"].get<double>()) > 1e-4 * ca[0]["grad_norm"].get<double>());
  }
}
