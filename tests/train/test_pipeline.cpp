// The pipeline (`retort run`): configs/demo.json parses completely; a typo deep in a late
// stage fails before anything runs; keys the pipeline fills are refused; a small end-to-end
// run produces every stage's model, evaluation, the report and summary.json, shows each
// stage's row of the results table before the next stage starts and opens the report with
// that table; a rerun reuses every finished stage (`retort run` prints the rows between the
// stages' log lines, then the table); a changed stage config is refused, naming the stage.
#include <cstdlib>  // defines: setenv
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include "audit/report.h"
#include "common/config.h"
#include "common/error.h"
#include "run_capture.h"
#include "train/pipeline.h"

#include <catch2/catch.hpp>
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kBin = RETORT_BINARY_DIR;
const std::string kSrc = RETORT_SOURCE_DIR;

json model_config(int hidden, int inter, int layers, int heads, int kv) {
  return {{"architectures", {"Qwen2ForCausalLM"}}, {"model_type", "qwen2"}, {"vocab_size", 320}, {"hidden_size", hidden},
          {"intermediate_size", inter}, {"num_hidden_layers", layers}, {"num_attention_heads", heads},
          {"num_key_value_heads", kv}, {"max_position_embeddings", 512}, {"rope_theta", 10000.0},
          {"rms_norm_eps", 1e-6}, {"tie_word_embeddings", true}};
}

// A pipeline small enough for a test: the same stages as the demo, a few steps each.
json small_pipeline(const std::string& run_dir) {
  json split = {{"math", 40}, {"code", 20}, {"min_steps", 1}, {"max_steps", 2}};
  json sft = {{"data", {{"chat_template", "chatml"}, {"max_length", 384}}},
              {"optim", {{"lr", 3e-3}, {"warmup_steps", 2}}},
              {"steps", 6},
              {"batch_size", 4},
              {"eval_every", 0},
              {"save_every", 0},
              {"keep_last", 1}};
  json teacher = sft;
  teacher["model_config"] = model_config(48, 96, 2, 4, 2);
  json student = sft;
  student["model_config"] = model_config(16, 32, 2, 2, 1);
  student["distill"] = {{"logit", {{"kind", "forward_kl"}, {"temperature", 2.0}}},
                        {"feature", {{"layer_map", {{"2", 2}}}}},
                        {"attention", {{"layer_map", {{"0", 0}}}}},
                        {"schedule",
                         {{"mode", "phases"},
                          {"phases",
                           {{{"steps", 2}, {"weights", {{"ce", 1.0}, {"attention", 1.0}}}},
                            {{"steps", 2}, {"weights", {{"ce", 1.0}, {"feature", 1.0}}}},
                            {{"steps", 0}, {"weights", {{"ce", 1.0}, {"logit", 1.0}}}}}}}}};
  json grpo = {{"data", {{"chat_template", "chatml"}}},
               {"prompts_per_step", 2},
               {"group_size", 4},
               {"sampling", {{"max_new_tokens", 24}}},
               {"rewards",
                {{"verifiers", {{{"name", "math"}}, {{"name", "code"}, {"args", {{"reward", "all_or_nothing"}}}}, {{"name", "format"}, {"weight", 0.1}}}},
                 {"threads", 1}}},
               {"optim", {{"lr", 1e-3}}},
               {"steps", 2},
               {"save_every", 0},
               {"keep_last", 1}};
  json eval = {{"format", {{"chat_template", "chatml"}}},
               {"sampling", {{"k", 2}, {"max_new_tokens", 24}}},
               {"rewards", {{"threads", 1}}},
               {"batch_size", 8}};
  return {{"run_dir", run_dir},
          {"runtime", {{"threads", 1}, {"seed", 11}, {"device", "cpu"}}},
          {"data",
           {{"seed", 3},
            {"train", split},
            {"valid", {{"math", 4}, {"code", 2}, {"min_steps", 1}, {"max_steps", 2}}},
            {"rl", {{"math", 6}, {"code", 3}, {"min_steps", 2}, {"max_steps", 3}}},
            {"eval", {{"math", 4}, {"code", 2}, {"min_steps", 2}, {"max_steps", 3}}}}},
          {"tokenizer", {{"vocab_size", 300}}},
          {"teacher", teacher},
          {"student", student},
          {"grpo", grpo},
          {"eval", eval}};
}

size_t count_lines(const std::string& path) {
  std::ifstream f(path);
  std::string line;
  size_t n = 0;
  while (std::getline(f, line))
    if (!line.empty()) ++n;
  return n;
}

}  // namespace

TEST_CASE("pipeline: configs/demo.json parses in every stage", "[e2e]") {
  const std::string path = kSrc + "/configs/demo.json";
  json doc = retort::load_json_file(path);
  const std::string run = kBin + "/test_runs/pipeline_demo_parse";
  fs::remove_all(run);
  doc["run_dir"] = run;
  doc["stages"] = json::array();  // validate every stage's config, run none
  retort::PipelineResult r = retort::run_pipeline(doc, path);
  CHECK(fs::exists(run + "/config.resolved.json"));
  CHECK(fs::exists(r.summary));
  CHECK_FALSE(fs::exists(run + "/data"));
  // The demo's student has at most a quarter of the teacher's parameters: the issue's size bound,
  // checked on the two model configs (12*h^2-ish layers plus the tied embedding).
  auto params = [](const json& c) {
    int64_t h = c["hidden_size"], i = c["intermediate_size"], L = c["num_hidden_layers"], v = c["vocab_size"];
    int64_t heads = c["num_attention_heads"], kv = c["num_key_value_heads"], d = h / heads;
    int64_t attn = h * heads * d + heads * d + 2 * (h * kv * d + kv * d) + heads * d * h;
    return v * h + L * (attn + 3 * h * i + 2 * h) + h;
  };
  double ratio = static_cast<double>(params(doc["student"]["model_config"])) / static_cast<double>(params(doc["teacher"]["model_config"]));
  INFO("student/teacher parameter ratio " << ratio);
  CHECK(ratio <= 0.25);
}

TEST_CASE("pipeline: the demo's on-policy distillation overrides (alone, and with GRPO) parse", "[e2e]") {
  // The commands docs/objectives.md gives; with anchor = none the teacher is still handed to GRPO.
  const std::string path = kSrc + "/configs/demo.json";
  const std::vector<std::vector<std::string>> override_sets = {
      {"grpo.rewards.verifiers=[]", "grpo.opd.weight=1", "grpo.loss.beta=0"},
      {"grpo.opd.weight=0.1"},
      {"grpo.anchor=none", "grpo.loss.beta=0", "grpo.opd.weight=0.5"}};
  for (const auto& ov : override_sets) {
    INFO(ov[0]);
    json doc = retort::load_json_file(path);
    const std::string run = kBin + "/test_runs/pipeline_demo_opd_parse";
    fs::remove_all(run);
    doc["run_dir"] = run;
    doc["stages"] = json::array();  // validate every stage's config, run none
    CHECK_NOTHROW(retort::run_pipeline(doc, path, ov));
  }
}

TEST_CASE("pipeline: make demo-tools' overrides parse, and compare_to shows the plain run's rows first", "[e2e]") {
  const std::string path = kSrc + "/configs/demo.json";
  const std::string plain = kBin + "/test_runs/pipeline_compare_plain", run = kBin + "/test_runs/pipeline_compare_tools";
  fs::remove_all(plain);
  fs::remove_all(run);
  json doc = retort::load_json_file(path);
  doc["run_dir"] = run;
  doc["stages"] = json::array();
  const std::vector<std::string> ov = {"data.tools=python", "grpo.tools.enabled=true", "eval.tools.enabled=true",
                                       "compare_to=" + plain};
  // Without the plain run's summary.json: one error naming the file.
  try {
    retort::run_pipeline(doc, path, ov);
    FAIL("expected an error");
  } catch (const retort::Error& e) {
    CHECK(std::string(e.what()).find(plain + "/summary.json") != std::string::npos);
  }
  // A plain run's summary.json, as write_summary writes it.
  fs::create_directories(plain);
  std::ofstream(plain + "/summary.json") << R"({"run_dir": "p", "stages": {
      "teacher": {"model": "t", "parameters": 468000, "math_pass1": 0.428, "code_pass1": 0.335, "all_pass1": 0.397, "train_s": 266, "eval_s": 67},
      "student": {"model": "s", "parameters": 114000, "math_pass1": 0.511, "code_pass1": 0.368, "all_pass1": 0.464, "train_s": 337, "eval_s": 52}}})";
  std::vector<std::string> shown;
  retort::PipelineHooks hooks;
  hooks.on_table = [&](const std::string& lines) { shown.push_back(lines); };
  retort::PipelineResult r = retort::run_pipeline(doc, path, ov, hooks);
  REQUIRE(r.compared.size() == 2);
  // First the header and the plain rows, before any stage runs; then one row per stage of
  // this run (none trained here), labelled as using tools.
  REQUIRE(shown.size() == 4);
  CHECK(shown[0].rfind("stage ", 0) == 0);
  CHECK(shown[0].find("+tools") == std::string::npos);
  CHECK(shown[1].rfind("teacher+tools ", 0) == 0);
  CHECK(shown[2].rfind("student+tools ", 0) == 0);
  CHECK(shown[3].rfind("grpo+tools ", 0) == 0);
  CHECK(shown[0].find("student             0.114M        51.1%        36.8%        46.4%") != std::string::npos);
  // This run's student, with tools: its row is labelled, and the note gives the math gain.
  retort::StageSummary mine;
  mine.stage = "student", mine.label = "student+tools", mine.parameters = 114000;
  mine.math_pass1 = 0.70, mine.code_pass1 = 0.368, mine.all_pass1 = 0.59;
  r.stages = {mine};
  const std::string table = retort::format_summary(r);
  INFO(table);
  CHECK(table.find("teacher") < table.find("student+tools"));
  CHECK(table.find("student+tools over student: +18.9 points of held-out math pass@1 (target >= +15)") != std::string::npos);
}

TEST_CASE("pipeline: config errors name the key before anything runs", "[e2e]") {
  const std::string run = kBin + "/test_runs/pipeline_errors";
  fs::remove_all(run);
  json doc = small_pipeline(run);
  doc["grpo"]["loss"] = {{"betta", 0.1}};
  CHECK_THROWS_WITH(retort::run_pipeline(doc, "p.json"), Catch::Contains("grpo.loss.betta") && Catch::Contains("p.json"));
  CHECK_FALSE(fs::exists(run + "/data"));  // nothing ran

  doc = small_pipeline(run);
  doc["teacher"]["run_dir"] = "elsewhere";
  CHECK_THROWS_WITH(retort::run_pipeline(doc, "p.json"), Catch::Contains("teacher.run_dir") && Catch::Contains("set by the pipeline"));
  doc = small_pipeline(run);
  doc["student"]["distill"]["teacher"] = "other";
  CHECK_THROWS_WITH(retort::run_pipeline(doc, "p.json"), Catch::Contains("student.distill.teacher"));
  doc = small_pipeline(run);
  doc["stages"] = {"data", "sft"};
  CHECK_THROWS_WITH(retort::run_pipeline(doc, "p.json"), Catch::Contains("unknown pipeline stage 'sft'") && Catch::Contains("teacher"));
  doc = small_pipeline(run);
  doc["student"]["optim"]["lrr"] = 1;
  CHECK_THROWS_WITH(retort::run_pipeline(doc, "p.json"), Catch::Contains("student.optim.lrr"));
  CHECK_FALSE(fs::exists(run + "/data"));
}

TEST_CASE("pipeline: a small end-to-end run, then a rerun that reuses every stage", "[e2e]") {
  const std::string run = kBin + "/test_runs/pipeline_e2e";
  fs::remove_all(run);
  // The table as it grows: what was shown, and what the run directory held at that moment.
  struct Shown {
    std::string lines;
    bool evaluated = false;     // the stage's eval.json was written
    bool next_started = false;  // the next stage had left anything in the run directory
  };
  std::vector<Shown> shown;
  retort::PipelineHooks hooks;
  hooks.on_table = [&](const std::string& lines) {
    static const std::map<std::string, std::string> kNext = {{"teacher", "/student"}, {"student", "/grpo"}, {"grpo", "/report.html"}};
    Shown sh;
    sh.lines = lines;
    std::string row = lines.substr(0, lines.size() - 1);  // the last line is this stage's row
    if (row.rfind('\n') != std::string::npos) row = row.substr(row.rfind('\n') + 1);
    const std::string stage = row.substr(0, row.find(' '));
    sh.evaluated = fs::exists(run + "/eval/" + stage + "/eval.json");
    sh.next_started = kNext.count(stage) == 0 || fs::exists(run + kNext.at(stage)) || fs::exists(run + "/summary.json");
    shown.push_back(sh);
  };
  retort::PipelineResult r = retort::run_pipeline(small_pipeline(run), "pipeline test", {}, hooks);

  // Every stage left its output.
  for (const char* f : {"/data/traces.train.jsonl", "/data/rl.jsonl", "/data/eval.math.jsonl", "/data/eval.code.jsonl",
                        "/tokenizer/tokenizer.json", "/teacher/final/model.safetensors", "/student/final/model.safetensors",
                        "/grpo/final/model.safetensors", "/grpo/chains.jsonl", "/eval/teacher/eval.json", "/eval/student/eval.json",
                        "/eval/grpo/eval.json", "/report.html", "/summary.json"}) {
    INFO(f);
    CHECK(fs::exists(run + f));
  }
  // GRPO's prompt file holds the math and the code RL prompts, interleaved.
  CHECK(count_lines(run + "/data/rl.jsonl") == 9);
  // GRPO sampled B x G chains per step.
  CHECK(count_lines(run + "/grpo/chains.jsonl") >= 2 * 2 * 4);

  REQUIRE(r.stages.size() == 3);
  CHECK(r.stages[0].stage == "teacher");
  CHECK(r.stages[1].stage == "student");
  CHECK(r.stages[2].stage == "grpo");
  CHECK(r.stages[1].parameters < r.stages[0].parameters);
  CHECK(r.stages[2].parameters == r.stages[1].parameters);  // GRPO trains the student
  for (const auto& s : r.stages) {
    INFO(s.stage);
    CHECK(s.train_s > 0);
    CHECK(s.math_pass1 >= 0.0);
    CHECK(s.math_pass1 <= 1.0);
    CHECK(s.code_pass1 >= 0.0);
    CHECK(s.code_pass1 <= 1.0);
    // all = the prompt-weighted mean of math (4 prompts) and code (2 prompts).
    CHECK(s.all_pass1 == Approx((4 * s.math_pass1 + 2 * s.code_pass1) / 6.0).margin(1e-12));
    // The table's numbers are the stage's eval.json.
    json ev = retort::load_json_file(run + "/eval/" + s.stage + "/eval.json");
    CHECK(ev["datasets"]["math"]["metrics"]["all"]["pass@1"].get<double>() == s.math_pass1);
    CHECK(ev["datasets"]["code"]["metrics"]["all"]["pass@1"].get<double>() == s.code_pass1);
  }
  json summary = retort::load_json_file(r.summary);
  CHECK(summary["stages"]["student"]["parameters"] == r.stages[1].parameters);
  // The report shows the evaluation per stage.
  json per_stage = retort::load_json_file(run + "/grpo/eval.json");
  CHECK(per_stage.contains("teacher"));
  CHECK(per_stage.contains("grpo"));
  std::string table = retort::format_summary(r);
  CHECK_THAT(table, Catch::Contains("student/teacher parameters"));
  CHECK_THAT(table, Catch::Contains("report: " + run + "/report.html"));

  // Every stage's row was shown as soon as its evaluation finished, before the next stage
  // started: the header once, with the first row, then one row per stage, each the final
  // table's row.
  REQUIRE(shown.size() == 3);
  for (size_t i = 0; i < 3; ++i) {
    INFO(r.stages[i].stage);
    CHECK(shown[i].lines == (i == 0 ? retort::summary_header() : std::string()) + retort::summary_row(r.stages[i]));
    CHECK(shown[i].evaluated);
    CHECK_FALSE(shown[i].next_started);
    CHECK_THAT(table, Catch::Contains(retort::summary_row(r.stages[i])));
  }
  CHECK(table.rfind(retort::summary_header(), 0) == 0);  // the final table has the same header

  // The report opens with the same table: its first section, before the chain browser, a row
  // per stage with the same cells in order, and the lines under the table.
  {
    std::ifstream f(run + "/report.html");
    const std::string html((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t results = html.find("<section id=\"results\">");
    REQUIRE(results != std::string::npos);
    CHECK(html.find("<section") == results);  // no section before it
    const std::string section = html.substr(results, html.find("</section>", results) - results);
    CHECK(html.find("<section id=\"chains\">") > results + section.size());
    size_t at = 0;
    for (const auto& col : retort::summary_columns()) {
      INFO(col);
      at = section.find("<th>" + col + "</th>", at);
      CHECK(at != std::string::npos);
    }
    for (const auto& s : r.stages) {
      const std::vector<std::string> cells = retort::summary_cells(s);
      for (size_t j = 0; j < cells.size() && at != std::string::npos; ++j) {
        INFO(s.stage << " cell " << j << ": " << cells[j]);
        at = section.find(j == 0 ? "<th>" + cells[j] + "</th>" : ">" + cells[j] + "</td>", at);
        CHECK(at != std::string::npos);
      }
    }
    for (const auto& note : retort::summary_notes(r.stages)) {
      INFO(note);
      CHECK(section.find(retort::audit::html_escape(note)) != std::string::npos);
    }
    CHECK_FALSE(retort::summary_notes(r.stages).empty());
  }

  // A rerun with the same config trains nothing and reports the same numbers.
  const size_t chains_before = count_lines(run + "/grpo/chains.jsonl");
  // A rerun that reused every stage: nothing trained, the same figures, GRPO did not sample again.
  auto check_all_reused = [&](const retort::PipelineResult& rerun, const std::string& dir) {
    REQUIRE(rerun.stages.size() == 3);
    for (size_t i = 0; i < 3; ++i) {
      INFO(rerun.stages[i].stage);
      CHECK(rerun.stages[i].train_s == 0.0);
      CHECK(rerun.stages[i].all_pass1 == r.stages[i].all_pass1);
    }
    CHECK(count_lines(dir + "/grpo/chains.jsonl") == chains_before);
  };
  retort::PipelineResult again = retort::run_pipeline(small_pipeline(run), "pipeline test");
  check_all_reused(again, run);

  // `retort run` prints each row as its stage is done (here: reused), between the stages'
  // log lines on stderr, and the whole table at the end.
  const std::string bin = kBin + "/retort";
  if (fs::exists(bin)) {
    std::ofstream(run + ".json") << small_pipeline(run).dump(2);
    const std::string out = run_capture(bin + " run " + run + ".json 2>&1");
    INFO(out);
    const size_t header = out.find(retort::summary_header());
    const size_t teacher_row = out.find("\nteacher "), student_row = out.find("\nstudent "), grpo_row = out.find("\ngrpo ");
    const size_t student_starts = out.find("pipeline: student finished earlier"), grpo_starts = out.find("pipeline: grpo finished earlier");
    const size_t final_header = out.find(retort::summary_header(), header + 1);
    REQUIRE(header != std::string::npos);
    REQUIRE(final_header != std::string::npos);
    CHECK(out.find(retort::summary_header(), final_header + 1) == std::string::npos);  // the header twice: rows, then the table
    CHECK(header < teacher_row);
    CHECK(teacher_row < student_starts);
    CHECK(student_starts < student_row);
    CHECK(student_row < grpo_starts);
    CHECK(grpo_starts < grpo_row);
    CHECK(grpo_row < final_header);
    CHECK(student_starts != std::string::npos);
    CHECK(grpo_row != std::string::npos);
    CHECK_THAT(out.substr(final_header), Catch::Contains("summary: " + run + "/summary.json"));
  } else {
    WARN("no " << bin << " in this build: `retort run` output not exercised");
  }

  // Keys spelled out with their default values are no change: every stage is reused.
  json spelled = small_pipeline(run);
  spelled["grpo"]["overlong"] = "none";
  spelled["grpo"]["loss"]["kl_estimator"] = "k3";
  spelled["eval"]["rewards"]["sandbox"] = {{"warm_workers", false}};
  retort::PipelineResult same = retort::run_pipeline(spelled, "pipeline test");
  check_all_reused(same, run);
  // stage.json records the resolved config, defaults included.
  CHECK(retort::load_json_file(run + "/grpo/stage.json")["config"]["loss"]["kl_estimator"] == "k3");

  // A copy of the run folder elsewhere (a second GRPO seed on a copy, a moved folder) is the same
  // run: stage.json records its inputs relative to the run folder, so every stage is reused.
  {
    const std::string copy = run + "_copy";
    fs::remove_all(copy);
    fs::copy(run, copy, fs::copy_options::recursive);
    retort::PipelineResult moved = retort::run_pipeline(small_pipeline(copy), "pipeline test");
    check_all_reused(moved, copy);
    fs::remove_all(copy);
  }

  // A changed stage config is refused, naming the key and both values: the stage's checkpoints
  // belong to the old one.
  json changed = small_pipeline(run);
  changed["teacher"]["steps"] = 7;
  CHECK_THROWS_WITH(retort::run_pipeline(changed, "pipeline test"),
                    Catch::Contains("teacher stage") && Catch::Contains("different config") && Catch::Contains("teacher.steps: 6 then, 7 now") &&
                        Catch::Contains("new run_dir"));
  json changed_eval = small_pipeline(run);
  changed_eval["eval"]["sampling"]["temperature"] = 1.0;
  CHECK_THROWS_WITH(retort::run_pipeline(changed_eval, "pipeline test"),
                    Catch::Contains("eval of teacher stage") && Catch::Contains("eval.sampling.temperature: 0.6 then, 1.0 now"));

  // Same configs, but the training traces changed under the finished stages (an earlier stage
  // was redone): the teacher trained on the old ones is refused, naming the file, not reused.
  {
    std::ofstream f(run + "/data/traces.train.jsonl", std::ios::app);
    f << "{\"id\": \"extra\", \"prompt\": \"1 + 1?\", \"completion\": \"<think>\\n1 + 1 = 2.\\n</think>\\nThe answer is \\\\boxed{2}.\"}\n";
  }
  CHECK_THROWS_WITH(retort::run_pipeline(small_pipeline(run), "pipeline test"),
                    Catch::Contains("teacher stage") && Catch::Contains("other inputs") && Catch::Contains("traces.train.jsonl") &&
                        Catch::Contains("delete " + run + "/teacher"));
  // Once the stages made from them are deleted, the rerun redoes exactly those.
  fs::remove_all(run + "/teacher");
  fs::remove_all(run + "/student");
  fs::remove_all(run + "/grpo");
  fs::remove_all(run + "/eval");
  retort::PipelineResult redone = retort::run_pipeline(small_pipeline(run), "pipeline test");
  REQUIRE(redone.stages.size() == 3);
  for (const auto& s : redone.stages) {
    INFO(s.stage);
    CHECK(s.train_s > 0);
  }
}

TEST_CASE("pipeline: two data-parallel ranks run every stage, rank 0 alone writes, and one process reuses their stages", "[e2e]") {
  const std::string bin = kBin + "/retort";
  if (!fs::exists(bin)) {
    WARN("no " << bin << " in this build: `retort launch -n 2 -- run` not exercised");
    return;
  }
  const std::string run = kBin + "/test_runs/pipeline_dp";
  fs::remove_all(run);
  std::ofstream(run + ".json") << small_pipeline(run).dump(2);
  ::setenv("RETORT_DIST_TIMEOUT_S", "60", 1);  // a broken rendezvous fails the test instead of hanging it
  const std::string out = run_capture(bin + " launch -n 2 -- run " + run + ".json 2>&1; echo exit=$?");
  INFO(out);
  REQUIRE(out.find("exit=0") != std::string::npos);
  for (const char* f : {"/teacher/final/model.safetensors", "/student/final/model.safetensors", "/grpo/final/model.safetensors",
                        "/grpo/chains.jsonl", "/eval/teacher/eval.json", "/eval/student/eval.json", "/eval/grpo/eval.json",
                        "/teacher/stage.json", "/eval/grpo/stage.json", "/report.html", "/summary.json"}) {
    INFO(f);
    CHECK(fs::exists(run + f));
  }
  // Rank 0 prints the rows and the table (the header twice); the other rank prints neither.
  size_t headers = 0;
  for (size_t at = out.find(retort::summary_header()); at != std::string::npos; at = out.find(retort::summary_header(), at + 1)) ++headers;
  CHECK(headers == 2);
  CHECK(out.find("distilled student / teacher") == out.rfind("distilled student / teacher"));
  // Every evaluation sampled every prompt (each rank its share, gathered by rank 0): 6 prompts x 2 samples.
  for (const char* stage : {"teacher", "student", "grpo"}) {
    INFO(stage);
    CHECK(count_lines(run + "/eval/" + stage + "/eval_samples.jsonl") == 12);
  }
  // The markers rank 0 wrote are a finished run's: one process reuses every stage.
  const json summary = retort::load_json_file(run + "/summary.json");
  retort::PipelineResult again = retort::run_pipeline(small_pipeline(run), "pipeline test");
  REQUIRE(again.stages.size() == 3);
  for (const auto& s : again.stages) {
    INFO(s.stage);
    CHECK(s.train_s == 0.0);
    CHECK(s.all_pass1 == summary["stages"][s.stage]["all_pass1"].get<double>());
  }
}
