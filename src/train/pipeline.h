// The whole pipeline in one run: `retort run CONFIG` (configs/demo.json is the embedded default).
//
// Top-down (run_pipeline in pipeline.cpp), each stage in its own folder of RUN_DIR:
//   data       the synthetic teacher's traces and prompts (data/synthetic.h): traces for SFT,
//              RL prompts, held-out evaluation prompts, a tokenizer corpus     -> RUN_DIR/data/
//   tokenizer  a byte-level BPE tokenizer trained on that corpus               -> RUN_DIR/tokenizer/
//   teacher    SFT of a tiny Qwen2-shaped teacher from random weights          -> RUN_DIR/teacher/final
//   student    SFT + hierarchical distillation of a smaller student from it    -> RUN_DIR/student/final
//   grpo       GRPO of the student on the RL prompts, KL anchor to the teacher -> RUN_DIR/grpo/final
//   eval       each of those models on the held-out prompts (math and code), as
//              soon as it is trained                                            -> RUN_DIR/eval/<stage>/
//   report     RUN_DIR/report.html (the GRPO run's chains and metrics), opening with the
//              results table (grpo/results.json); the evaluation per stage is grpo/eval.json
// The results table (held-out accuracy per stage, wall times) grows while the stages run:
// each stage's row goes to PipelineHooks::on_table as soon as its evaluation finishes (the
// header once, with the first row), so `retort run` shows it before the next stage starts;
// at the end `retort run` prints the whole table with the student/teacher size ratio, the
// targets and where the report is. RUN_DIR/summary.json holds the same numbers.
//
// The stage sections of the config ("teacher", "student", "grpo", "eval") are the configs of
// `retort sft`, `retort distill`, `retort grpo` and `retort eval` without the paths the
// pipeline fills in (run_dir, model, teacher, tokenizer, data files, datasets); the top-level
// "runtime" applies to every stage that does not set its own. Every stage config is parsed
// before anything runs, so a typo deep in "grpo" fails in the first second, naming the key.
//
// Resume: a stage that finished writes RUN_DIR/<stage>/stage.json (its resolved config and a
// content hash of every file it read from earlier stages); a rerun skips it when both are
// unchanged and refuses, naming the stage and the keys that differ (or the file), when either
// changed (its outputs belong to the old config or inputs). Configs are compared resolved, with
// every default filled in, so spelling out a default is no change. A stage killed halfway
// resumes from its last checkpoint (sft and grpo resume exactly).
//
// Data parallel: `retort launch -n N -- run CONFIG` trains every stage over N ranks (each
// takes its slice of every batch, as `retort sft` and `retort grpo` do under launch) and
// evaluates over them (each samples a share of the prompts); rank 0 alone writes the data,
// tokenizer, markers, eval.json files and report. The results equal one
// process's up to float rounding (the same batches and, for GRPO, the same completions).
//
// What it deliberately is not: a scheduler. Stages run one after the other in this process.
#pragma once

#include <cstdint>     // defines: int64_t
#include <functional>  // defines: std::function
#include <string>      // defines: std::string
#include <vector>   // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "common/runtime.h"     // defines: RuntimeConfig
#include "data/synthetic.h"     // defines: SyntheticOptions
#include "tokenizer/trainer.h"  // defines: BpeTrainerOptions

namespace retort {

class ConfigBinder;

struct PipelineConfig {
  std::string run_dir = "runs/demo";
  std::vector<std::string> stages = {"data", "tokenizer", "teacher", "student", "grpo", "eval", "report"};
  RuntimeConfig runtime;           // default for every stage
  SyntheticOptions data;           // the synthetic teacher's splits
  BpeTrainerOptions tokenizer;     // trained on data/tokenizer.jsonl
  nlohmann::json teacher = nlohmann::json::object();  // an SftConfig without run_dir, tokenizer, data.train / data.valid
  nlohmann::json student = nlohmann::json::object();  // an SftConfig with "distill"; the pipeline sets distill.teacher
  nlohmann::json grpo = nlohmann::json::object();     // a GrpoConfig without run_dir, model, teacher, tokenizer, data.prompts
  nlohmann::json eval = nlohmann::json::object();     // an EvalConfig without run_dir, model, datasets
  // A finished run folder (its summary.json) whose rows the table shows before this run's,
  // e.g. the plain demo beside the tool-using one. "" = none.
  std::string compare_to;
  void bind(ConfigBinder& b);
};

// One row of the results table.
struct StageSummary {
  std::string stage;            // teacher | student | grpo
  std::string label;            // the table's first cell: the stage, "+tools" when its traces call tools
  std::string model;            // its checkpoint folder
  int64_t parameters = 0;
  double math_pass1 = -1;       // held-out pass@1 in [0, 1]; -1 = not evaluated
  double code_pass1 = -1;
  double all_pass1 = -1;        // over math and code prompts together
  double train_s = 0;           // wall time of the stage's training in this process (0 = reused)
  double eval_s = 0;
};

struct PipelineResult {
  std::vector<StageSummary> compared;  // the rows of PipelineConfig::compare_to, shown first
  std::vector<StageSummary> stages;
  double data_s = 0, tokenizer_s = 0, report_s = 0, total_s = 0;
  std::string report;           // report.html path ("" = not written)
  std::string summary;          // summary.json path
  bool main_rank = true;        // false on the other ranks of a data-parallel run: they have no table
};

// What a caller can watch while the pipeline runs.
struct PipelineHooks {
  // The results table as it grows: summary_header() + the first stage's row, then each later
  // stage's summary_row(), each as soon as that stage is evaluated (trained, when "eval" is
  // not among the stages) and before the next stage starts. Unset = nothing shown.
  std::function<void(const std::string& lines)> on_table;
};

// Runs the stages named in the config, in the fixed order above. `overrides` are "a.b=c"
// strings applied to `doc` before parsing (e.g. "grpo.steps=5").
PipelineResult run_pipeline(const nlohmann::json& doc, const std::string& where, const std::vector<std::string>& overrides = {},
                            const PipelineHooks& hooks = {});

// The results table: its columns, a stage's cells (pass@1 as "46.2%", "-" when not evaluated;
// times as "3m 36s", "reused" for a stage trained earlier), both as text lines at fixed widths
// (the header and a row end in a newline), and the lines under it (the student/teacher size
// ratio and the two targets, when the stages they compare were evaluated). The same cells
// make stdout's table and the report's (grpo/results.json).
std::vector<std::string> summary_columns();
std::vector<std::string> summary_cells(const StageSummary& s);
std::string summary_header();
std::string summary_row(const StageSummary& s);
std::vector<std::string> summary_notes(const std::vector<StageSummary>& stages);
// The notes that compare this run with compare_to's rows: math pass@1 of each stage both ran
// (with tools, against the target of +15 points for the distilled student).
std::vector<std::string> comparison_notes(const std::vector<StageSummary>& compared, const std::vector<StageSummary>& stages);

// The whole table printed at the end: header, rows, notes, wall times, the report and
// summary.json paths.
std::string format_summary(const PipelineResult& r);

}  // namespace retort
