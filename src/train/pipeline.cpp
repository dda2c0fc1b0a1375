// The pipeline recipe: data -> tokenizer -> teacher -> student -> grpo -> eval -> report.
// See pipeline.h for the stages, the config and resume.
#include "train/pipeline.h"

#include <algorithm>   // defines: std::sort, std::find
#include <cstdint>     // defines: uint64_t
#include <cstdio>      // defines: std::snprintf
#include <filesystem>  // defines: std::filesystem
#include <fstream>     // defines: std::ifstream, std::ofstream
#include <sstream>     // defines: std::ostringstream
#include <string_view> // defines: std::string_view
#include <vector>      // defines: std::vector

#include "audit/report.h"       // defines: write_report
#include "common/config.h"      // defines: ConfigBinder, parse_config, apply_override, write_json_file_atomic, load_json_file
#include "common/error.h"       // defines: retort::Error
#include "common/hash.h"        // defines: fnv1a, kFnv1aOffset
#include "common/log.h"         // defines: log_info, fmt_pct
#include "common/platform.h"    // defines: now_seconds
#include "common/run_dir.h"     // defines: RunDir, make_dirs
#include "common/runtime.h"     // defines: resolve_device
#include "dist/dist.h"          // defines: DistContext, dist_context
#include "model/checkpoint.h"   // defines: read_checkpoint_tensors
#include "tokenizer/text_io.h"  // defines: read_training_texts
#include "train/eval.h"         // defines: run_eval, EvalConfig
#include "train/grpo.h"         // defines: run_grpo, GrpoConfig
#include "train/sft.h"          // defines: run_sft, SftConfig

namespace fs = std::filesystem;
using nlohmann::json;

namespace retort {

void PipelineConfig::bind(ConfigBinder& b) {
  b.field("run_dir", run_dir);
  b.field("stages", stages);
  b.field("runtime", runtime);
  b.field("data", data);
  b.field("tokenizer", tokenizer);
  b.field("teacher", teacher);
  b.field("student", student);
  b.field("grpo", grpo);
  b.field("eval", eval);
  b.field("compare_to", compare_to);
}

namespace {

const std::vector<std::string> kStages = {"data", "tokenizer", "teacher", "student", "grpo", "eval", "report"};

bool wants(const PipelineConfig& cfg, const std::string& stage) {
  return std::find(cfg.stages.begin(), cfg.stages.end(), stage) != cfg.stages.end();
}

// A stage section must be an object and must not set what the pipeline fills in.
void check_section(const json& section, const std::string& name, const std::vector<std::string>& filled, const std::string& where) {
  if (!section.is_object()) {
    throw Error(ErrorInfo{"the pipeline section '" + name + "' must be a JSON object", where, "an object", section.type_name(), ""});
  }
  for (const auto& key : filled) {
    // "data.train" style keys are nested.
    const json* node = &section;
    std::string rest = key;
    bool present = true;
    while (true) {
      size_t dot = rest.find('.');
      std::string head = rest.substr(0, dot);
      if (!node->is_object() || !node->contains(head)) {
        present = false;
        break;
      }
      node = &(*node)[head];
      if (dot == std::string::npos) break;
      rest = rest.substr(dot + 1);
    }
    if (present) {
      throw Error(ErrorInfo{"'" + name + "." + key + "' is set by the pipeline", where, "no '" + key + "' in the '" + name + "' section",
                            node->dump(), "remove it: the pipeline points every stage at the previous stage's output in run_dir"});
    }
  }
}

json with_runtime(json doc, const RuntimeConfig& runtime) {
  if (!doc.contains("runtime")) doc["runtime"] = config_to_json(runtime);
  return doc;
}

// Every stage's config, with the pipeline's paths filled in.
struct StageDocs {
  json teacher, student, grpo;
  json eval;  // without model and run_dir (set per evaluated stage)
};

struct Paths {
  std::string root, data, tokenizer, teacher_dir, student_dir, grpo_dir, eval_dir;
  std::string teacher_model() const { return teacher_dir + "/final"; }
  std::string student_model() const { return student_dir + "/final"; }
  std::string grpo_model() const { return grpo_dir + "/final"; }
};

Paths make_paths(const std::string& root) {
  Paths p;
  p.root = root;
  p.data = root + "/data";
  p.tokenizer = root + "/tokenizer/tokenizer.json";
  p.teacher_dir = root + "/teacher";
  p.student_dir = root + "/student";
  p.grpo_dir = root + "/grpo";
  p.eval_dir = root + "/eval";
  return p;
}

StageDocs stage_docs(const PipelineConfig& cfg, const Paths& p, const std::string& where) {
  StageDocs d;
  check_section(cfg.teacher, "teacher", {"run_dir", "tokenizer", "model", "output", "data.train", "data.valid", "distill"}, where);
  check_section(cfg.student, "student", {"run_dir", "tokenizer", "model", "output", "data.train", "data.valid", "distill.teacher"}, where);
  check_section(cfg.grpo, "grpo", {"run_dir", "tokenizer", "model", "output", "teacher", "data.prompts"}, where);
  check_section(cfg.eval, "eval", {"run_dir", "model", "tokenizer", "output", "datasets"}, where);

  d.teacher = with_runtime(cfg.teacher, cfg.runtime);
  d.teacher["run_dir"] = p.teacher_dir;
  d.teacher["tokenizer"] = p.tokenizer;
  d.teacher["data"]["train"] = p.data + "/traces.train.jsonl";
  d.teacher["data"]["valid"] = p.data + "/traces.valid.jsonl";

  d.student = with_runtime(cfg.student, cfg.runtime);
  d.student["run_dir"] = p.student_dir;
  d.student["tokenizer"] = p.tokenizer;
  d.student["data"]["train"] = p.data + "/traces.train.jsonl";
  d.student["data"]["valid"] = p.data + "/traces.valid.jsonl";
  d.student["distill"]["teacher"] = p.teacher_model();

  d.grpo = with_runtime(cfg.grpo, cfg.runtime);
  d.grpo["run_dir"] = p.grpo_dir;
  d.grpo["tokenizer"] = p.tokenizer;
  d.grpo["model"] = p.student_model();
  // The teacher serves GRPO as its KL anchor and as the on-policy distillation teacher.
  // (A malformed opd.weight is left for the grpo config's own check to name.)
  const json* opd_weight = cfg.grpo.contains("opd") && cfg.grpo["opd"].is_object() && cfg.grpo["opd"].contains("weight")
                               ? &cfg.grpo["opd"]["weight"] : nullptr;
  const bool opd_on = opd_weight && opd_weight->is_number() && opd_weight->get<double>() > 0;
  if (cfg.grpo.value("anchor", std::string("teacher")) == "teacher" || opd_on) d.grpo["teacher"] = p.teacher_model();
  d.grpo["data"]["prompts"] = p.data + "/rl.jsonl";

  d.eval = with_runtime(cfg.eval, cfg.runtime);
  d.eval["tokenizer"] = p.tokenizer;
  d.eval["datasets"] = json::array({json{{"name", "math"}, {"path", p.data + "/eval.math.jsonl"}},
                                    json{{"name", "code"}, {"path", p.data + "/eval.code.jsonl"}}});

  // Parse every stage now, so that a typo in a late stage fails before the early ones train.
  // Errors name the key with its section ("grpo.loss.betta").
  parse_config<SftConfig>(d.teacher, where, "teacher");
  parse_config<SftConfig>(d.student, where, "student");
  parse_config<GrpoConfig>(d.grpo, where, "grpo");
  json probe = d.eval;
  probe["model"] = p.teacher_model();
  probe["run_dir"] = p.eval_dir;
  parse_config<EvalConfig>(probe, where, "eval");
  return d;
}

// A stage's inputs: the files it reads that an earlier stage wrote, each with a content hash
// (FNV-1a 64 of its bytes; a model directory hashes its files in name order). A stage whose
// config is unchanged but whose inputs changed (new traces, a retrained teacher) must not be
// reused: its outputs were made from the old ones.
std::string content_hash(const std::string& path) {
  std::vector<fs::path> files;
  if (fs::is_directory(path)) {
    for (const auto& e : fs::directory_iterator(path))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
  } else if (fs::exists(path)) {
    files.push_back(path);
  } else {
    return "missing";
  }
  uint64_t h = kFnv1aOffset;
  std::vector<char> buf(1 << 16);
  for (const auto& f : files) {
    const std::string name = f.filename().string();
    h = fnv1a(std::string_view(name.c_str(), name.size() + 1), h);  // the name and its terminating 0
    std::ifstream in(f, std::ios::binary);
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      h = fnv1a(std::string_view(buf.data(), static_cast<size_t>(in.gcount())), h);
    }
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

// An input's key in stage.json: its path relative to the run folder `root` when it lies inside
// it (all of the pipeline's inputs do), so that a run folder copied or moved elsewhere (a
// second GRPO seed on a copy of runs/demo) still matches its records.
std::string input_key(const std::string& root, const std::string& path) {
  const std::string prefix = root + "/";
  return path.compare(0, prefix.size(), prefix) == 0 ? path.substr(prefix.size()) : path;
}

// A stage's config as stage.json records and compares it: paths inside the run folder written
// as "{run_dir}/..." (the stage configs name their inputs by path), for the same reason.
json within_run(const json& x, const std::string& root) {
  if (x.is_string()) {
    const std::string& v = x.get_ref<const std::string&>();
    if (v == root) return "{run_dir}";
    return v.compare(0, root.size() + 1, root + "/") == 0 ? json("{run_dir}/" + v.substr(root.size() + 1)) : x;
  }
  if (!x.is_structured()) return x;
  json out = x;
  for (auto it = out.begin(); it != out.end(); ++it) *it = within_run(*it, root);
  return out;
}

json input_hashes(const std::string& root, const std::vector<std::string>& inputs) {
  json out = json::object();
  for (const auto& path : inputs) out[input_key(root, path)] = content_hash(path);
  return out;
}

// How a stage's config is compared with the one a finished stage recorded: both are parsed
// into the stage's config struct and written back out, defaults included, so that a key
// spelled out with its default value (or a default the recorded file leaves implicit) is no
// change. A recorded config that no longer parses (a key since removed) is compared as written.
using Canonical = json (*)(const json&);

json canonical_as_written(const json& doc) { return doc; }

// A finished stage leaves DIR/stage.json: its resolved config and the hashes of its inputs.
// Returns true when the stage can be skipped; throws when it finished under a different
// config (naming the keys that differ) or from different inputs.
bool finished_earlier(const std::string& root, const std::string& dir, const json& doc, Canonical canonical, const std::string& key_prefix,
                      const std::vector<std::string>& inputs, const std::string& stage, const std::string& where) {
  const std::string marker = dir + "/stage.json";
  if (!fs::exists(marker)) return false;
  json before = load_json_file(marker);
  const json now_config = within_run(canonical(doc), root);
  const json then_config = before.is_object() && before.contains("config") ? within_run(canonical(before["config"]), root) : json();
  if (then_config != now_config) {
    throw Error(ErrorInfo{"the " + stage + " stage in " + dir + " finished under a different config", where,
                          "the config recorded in " + marker,
                          then_config.is_null() ? std::string("no config recorded") : config_differences(then_config, now_config, key_prefix),
                          "use a new run_dir, or delete " + dir + " (and the stages after it) to train it again"});
  }
  const json& then = before.contains("inputs") ? before["inputs"] : json::object();
  for (const auto& path : inputs) {
    const std::string hash = content_hash(path);
    // Records written before keys were relative to the run folder hold the path itself.
    const std::string key = then.contains(input_key(root, path)) ? input_key(root, path) : path;
    if (!then.contains(key) || then[key] != hash) {
      throw Error(ErrorInfo{"the " + stage + " stage in " + dir + " was made from other inputs than the ones now in the run directory",
                            where, path + " as recorded in " + marker + " (hash " + (then.contains(key) ? then[key].get<std::string>() : "none") + ")",
                            "hash " + hash,
                            "an earlier stage was redone; delete " + dir + " (and the stages after it) to redo it from the new inputs"});
    }
  }
  log_info("pipeline: " + stage + " finished earlier in " + dir + " with this config and these inputs; reusing it");
  return true;
}

// Records the config resolved (every default written out), so that stage.json says exactly
// what the stage ran with (paths in the run folder as "{run_dir}/...", within_run).
void mark_finished(const std::string& root, const std::string& dir, const json& doc, Canonical canonical, const std::vector<std::string>& inputs) {
  make_dirs(dir);
  write_json_file_atomic(dir + "/stage.json", json{{"config", within_run(canonical(doc), root)}, {"inputs", input_hashes(root, inputs)}}, 2);
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(ErrorInfo{"cannot read a file the data stage wrote", path, "a readable file", "no such file", "run the data stage"});
  std::vector<std::string> out;
  std::string line;
  while (std::getline(f, line))
    if (!line.empty()) out.push_back(line);
  return out;
}

int64_t count_parameters(const std::string& model_dir) {
  int64_t n = 0;
  for (const auto& [name, t] : read_checkpoint_tensors(model_dir)) n += t.numel();
  return n;
}

std::string fmt_duration(double s) {
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%.0fs", s);
  else std::snprintf(buf, sizeof buf, "%dm %02ds", static_cast<int>(s) / 60, static_cast<int>(s) % 60);
  return buf;
}


// ---- the stages ------------------------------------------------------------------------------

// The config with the overrides applied; every named stage must be one of kStages.
PipelineConfig parse_pipeline_config(const json& doc_in, const std::string& where, const std::vector<std::string>& overrides) {
  json doc = doc_in;
  for (const auto& o : overrides) apply_override(doc, o);
  PipelineConfig cfg = parse_config<PipelineConfig>(doc, where);
  for (const auto& s : cfg.stages) {
    if (std::find(kStages.begin(), kStages.end(), s) == kStages.end()) {
      std::string allowed;
      for (const auto& k : kStages) allowed += (allowed.empty() ? "" : ", ") + k;
      throw Error(ErrorInfo{"unknown pipeline stage '" + s + "'", where + ": stages", "some of: " + allowed, s, "stages run in the fixed order above"});
    }
  }
  return cfg;
}

// data: the synthetic teacher's traces and prompts, plus RUN_DIR/data/rl.jsonl (GRPO draws
// from one prompt file: the math and code RL prompts interleaved, so that every step sees
// both). -> its wall time.
double run_data_stage(const PipelineConfig& cfg, const Paths& p, const std::string& where) {
  const double t0 = now_seconds();
  json data_doc = config_to_json(cfg.data);
  if (!finished_earlier(p.root, p.data, data_doc, canonical_as_written, "data.", {}, "data", where)) {
    SyntheticData data = generate_synthetic(cfg.data);
    SyntheticFiles files = write_synthetic(data, p.data, /*tokenizer_corpus=*/true);
    std::vector<std::string> math = read_lines(files.rl_math), code = read_lines(files.rl_code);
    std::string mixed;
    for (size_t i = 0, j = 0; i < math.size() || j < code.size();) {
      // Keep the files' ratio: take from whichever list is further behind its share.
      bool take_math = j >= code.size() || (i < math.size() && i * code.size() <= j * math.size());
      mixed += (take_math ? math[i++] : code[j++]) + "\n";
    }
    write_file_atomic(p.data + "/rl.jsonl", mixed);
    log_info("pipeline: data: " + std::to_string(data.train.size()) + " training traces, " + std::to_string(data.valid.size()) +
             " validation traces, " + std::to_string(math.size() + code.size()) + " RL prompts, " +
             std::to_string(data.eval_math.size()) + " + " + std::to_string(data.eval_code.size()) + " held-out math + code prompts");
    mark_finished(p.root, p.data, data_doc, canonical_as_written, {});
  }
  return now_seconds() - t0;
}

// tokenizer: byte-level BPE trained on the corpus of traces and RL prompts. -> its wall time.
double run_tokenizer_stage(const PipelineConfig& cfg, const Paths& p, const std::string& where) {
  const double t0 = now_seconds();
  const std::string dir = fs::path(p.tokenizer).parent_path().string();
  json tok_doc = config_to_json(cfg.tokenizer);
  const std::vector<std::string> tok_inputs = {p.data + "/tokenizer.jsonl"};
  if (!finished_earlier(p.root, dir, tok_doc, canonical_as_written, "tokenizer.", tok_inputs, "tokenizer", where)) {
    BpeTrainerStats stats;
    json tok = train_bpe(read_training_texts(p.data + "/tokenizer.jsonl"), cfg.tokenizer, &stats);
    make_dirs(dir);
    write_json_file_atomic(p.tokenizer, tok, 2);
    log_info("pipeline: tokenizer: " + std::to_string(stats.merges) + " merges on " + std::to_string(stats.texts) + " texts");
    mark_finished(p.root, dir, tok_doc, canonical_as_written, tok_inputs);
  }
  return now_seconds() - t0;
}

// A training stage: where it runs, what it reads from earlier stages, how its config compares.
struct TrainedStage {
  std::string stage, dir, model;
  const json* doc;
  std::vector<std::string> inputs;  // files of earlier stages it reads
  Canonical canonical;
};

std::vector<TrainedStage> trained_stages(const Paths& p, const StageDocs& docs) {
  const std::string traces_train = p.data + "/traces.train.jsonl", traces_valid = p.data + "/traces.valid.jsonl";
  std::vector<std::string> grpo_inputs = {p.data + "/rl.jsonl", p.tokenizer, p.student_model()};
  if (docs.grpo.contains("teacher")) grpo_inputs.push_back(p.teacher_model());
  return {{"teacher", p.teacher_dir, p.teacher_model(), &docs.teacher, {traces_train, traces_valid, p.tokenizer}, canonical_config<SftConfig>},
          {"student", p.student_dir, p.student_model(), &docs.student, {traces_train, traces_valid, p.tokenizer, p.teacher_model()},
           canonical_config<SftConfig>},
          {"grpo", p.grpo_dir, p.grpo_model(), &docs.grpo, grpo_inputs, canonical_config<GrpoConfig>}};
}

// Rank 0's answer on every rank (one process: `mine`), so that all ranks skip or train a stage together.
bool rank0_says(const DistContext& dist, bool mine) {
  if (!dist.enabled()) return mine;
  return dist.sum(dist.is_main() && mine ? 1.0 : 0.0) > 0;
}

// teacher, student, grpo: trains the stage unless it is not among the stages or finished
// earlier (reused). Under data parallel every rank trains (sft.h, grpo.h); rank 0 decides
// whether the stage is reused and writes its marker. -> its row of the table, without the
// evaluation (rank 0's; the other ranks' rows are empty).
StageSummary train_stage(const PipelineConfig& cfg, const Paths& p, const TrainedStage& t, const std::string& where,
                         const DistContext& dist) {
  StageSummary s;
  s.stage = t.stage;
  s.label = cfg.data.tools == "none" ? t.stage : t.stage + "+tools";
  s.model = t.model;
  const bool reused = wants(cfg, t.stage) &&
                      rank0_says(dist, dist.is_main() && finished_earlier(p.root, t.dir, *t.doc, t.canonical, t.stage + ".", t.inputs, t.stage, where));
  if (wants(cfg, t.stage) && !reused) {
    const double t0 = now_seconds();
    log_info("pipeline: " + t.stage + " -> " + t.model);
    if (t.stage == "grpo") run_grpo(*t.doc, where + " (grpo)");
    else run_sft(*t.doc, where + " (" + t.stage + ")");
    dist.barrier();  // rank 0 writes the model after the last step; the others wait for it
    s.train_s = now_seconds() - t0;
    if (dist.is_main()) mark_finished(p.root, t.dir, *t.doc, t.canonical, t.inputs);
  }
  if (dist.is_main() && fs::exists(t.model)) s.parameters = count_parameters(t.model);
  return s;
}

// eval: the stage's model on the held-out math and code prompts (reused when evaluated
// earlier with this config and these inputs); fills the row's pass@1 columns, "all" being the
// prompt-weighted mean of math and code.
// Under data parallel every rank samples its share of the prompts (eval.h); rank 0 decides
// whether the evaluation is reused and fills the row.
void evaluate_stage(StageSummary& s, const StageDocs& docs, const Paths& p, const std::string& where, const DistContext& dist) {
  if (!rank0_says(dist, fs::exists(s.model))) {
    log_info("pipeline: eval: no " + s.stage + " model at " + s.model + "; skipped");
    return;
  }
  const std::string dir = p.eval_dir + "/" + s.stage;
  json ed = docs.eval;
  ed["model"] = s.model;
  ed["run_dir"] = dir;
  const std::string eval_json = dir + "/eval.json";
  const double t0 = now_seconds();
  const std::vector<std::string> eval_inputs = {p.data + "/eval.math.jsonl", p.data + "/eval.code.jsonl", p.tokenizer, s.model};
  const bool reused = rank0_says(dist, dist.is_main() && finished_earlier(p.root, dir, ed, canonical_config<EvalConfig>, "eval.", eval_inputs,
                                                                            "eval of " + s.stage, where) &&
                                             fs::exists(eval_json));
  if (!reused) {
    run_eval(ed, where + " (eval of " + s.stage + ")");
    if (dist.is_main()) mark_finished(p.root, dir, ed, canonical_config<EvalConfig>, eval_inputs);
  }
  s.eval_s = now_seconds() - t0;
  if (!dist.is_main()) return;
  json ev = load_json_file(eval_json);
  double passed = 0, total = 0;
  for (const char* name : {"math", "code"}) {
    const json& d = ev["datasets"][name];
    double p1 = d["metrics"]["all"]["pass@1"].get<double>();
    double n = d["prompts"].get<double>();
    (std::string(name) == "math" ? s.math_pass1 : s.code_pass1) = p1;
    passed += p1 * n;
    total += n;
  }
  s.all_pass1 = total > 0 ? passed / total : -1;
}

// The rows of a finished run's summary.json (write_summary), in stage order.
std::vector<StageSummary> read_compared_rows(const std::string& run_dir) {
  const std::string path = run_dir + "/summary.json";
  if (!fs::exists(path)) {
    throw Error(ErrorInfo{"the run to compare with has no results table", "pipeline: compare_to", path,
                          "no such file", "run that pipeline first (make demo), or drop compare_to"});
  }
  const json doc = load_json_file(path);
  std::vector<StageSummary> rows;
  for (const char* stage : {"teacher", "student", "grpo"}) {
    if (!doc.contains("stages") || !doc["stages"].contains(stage)) continue;
    const json& j = doc["stages"][stage];
    StageSummary s;
    s.stage = s.label = stage;
    s.model = j.value("model", "");
    s.parameters = j.value("parameters", int64_t{0});
    s.math_pass1 = j.value("math_pass1", -1.0), s.code_pass1 = j.value("code_pass1", -1.0), s.all_pass1 = j.value("all_pass1", -1.0);
    s.train_s = j.value("train_s", 0.0), s.eval_s = j.value("eval_s", 0.0);
    rows.push_back(s);
  }
  return rows;
}

std::vector<std::string> all_notes(const PipelineResult& r) {
  std::vector<std::string> notes = summary_notes(r.stages);
  for (auto& n : comparison_notes(r.compared, r.stages)) notes.push_back(std::move(n));
  return notes;
}

// report: RUN_DIR/report.html on the GRPO run, opening with the results table (the page reads
// grpo/results.json) and showing the held-out evaluation of every stage (grpo/eval.json).
// -> the page's path.
std::string write_pipeline_report(const PipelineResult& r, const Paths& p) {
  if (!fs::exists(p.grpo_dir + "/chains.jsonl")) {
    throw Error(ErrorInfo{"the report needs the GRPO run's chains", p.grpo_dir + "/chains.jsonl", "a file written by the grpo stage",
                          "no such file", "run the grpo stage (add \"grpo\" to stages)"});
  }
  json eval_by_stage = json::object();
  json rows = json::array();
  for (const auto& s : r.compared) rows.push_back(summary_cells(s));
  for (const auto& s : r.stages) {
    rows.push_back(summary_cells(s));
    if (s.all_pass1 >= 0) {
      eval_by_stage[s.stage] = {{"math", {{"pass@1", s.math_pass1}}}, {"code", {{"pass@1", s.code_pass1}}},
                                {"all", {{"pass@1", s.all_pass1}}}, {"parameters", {{"count", s.parameters}}}};
    }
  }
  write_json_file_atomic(p.grpo_dir + "/eval.json", eval_by_stage, 2);
  write_json_file_atomic(p.grpo_dir + "/results.json",
                         json{{"title", "Results: held-out accuracy per stage"},
                              {"columns", summary_columns()},
                              {"rows", rows},
                              {"notes", all_notes(r)}},
                         2);
  audit::ReportOptions ro;
  ro.run_dir = p.grpo_dir;
  ro.out = p.root + "/report.html";
  return audit::write_report(ro).path;
}

// RUN_DIR/summary.json: the table's numbers and the stages' wall times.
void write_summary(const PipelineResult& r, const std::string& run_dir) {
  json summary = {{"run_dir", run_dir}, {"stages", json::object()}};
  for (const auto& s : r.stages) {
    summary["stages"][s.stage] = {{"model", s.model},         {"parameters", s.parameters}, {"math_pass1", s.math_pass1},
                                  {"code_pass1", s.code_pass1}, {"all_pass1", s.all_pass1},   {"train_s", s.train_s},
                                  {"eval_s", s.eval_s}};
  }
  summary["data_s"] = r.data_s;
  summary["tokenizer_s"] = r.tokenizer_s;
  summary["report_s"] = r.report_s;
  summary["total_s"] = r.total_s;
  summary["report"] = r.report;
  write_json_file_atomic(r.summary, summary, 2);
}

// One line of the table: the columns at fixed widths.
std::string table_line(const std::vector<std::string>& cells) {
  char line[256];
  std::snprintf(line, sizeof line, "%-13s %12s %12s %12s %12s %10s %8s\n", cells.at(0).c_str(), cells.at(1).c_str(), cells.at(2).c_str(),
                cells.at(3).c_str(), cells.at(4).c_str(), cells.at(5).c_str(), cells.at(6).c_str());
  return line;
}

}  // namespace

PipelineResult run_pipeline(const json& doc_in, const std::string& where, const std::vector<std::string>& overrides,
                            const PipelineHooks& hooks) {
  const double t_start = now_seconds();
  const PipelineConfig cfg = parse_pipeline_config(doc_in, where, overrides);
  const Paths p = make_paths(cfg.run_dir);
  const StageDocs docs = stage_docs(cfg, p, where);
  // Data parallel (`retort launch -n N -- run CONFIG`): every rank trains each stage on its
  // slice of the batches and samples its share of each evaluation; rank 0 alone writes the
  // data, the tokenizer, the stage markers, eval.json and the report, and the other ranks wait
  // for it at a barrier (they log warnings and errors only).
  const DistContext& dist = dist_context(torch::Device(resolve_device(cfg.runtime.device)));
  if (!dist.is_main()) set_log_level(LogLevel::Warn);
  RunDir run(cfg.run_dir, /*lock=*/dist.is_main());
  if (dist.is_main()) run.save_resolved_config(config_to_json(cfg));
  PipelineResult result;
  result.main_rank = dist.is_main();
  if (!cfg.compare_to.empty() && dist.is_main()) {
    result.compared = read_compared_rows(cfg.compare_to);
    std::string lines = summary_header();
    for (const auto& s : result.compared) lines += summary_row(s);
    if (hooks.on_table && !result.compared.empty()) hooks.on_table(lines);
  }
  if (wants(cfg, "data") && dist.is_main()) result.data_s = run_data_stage(cfg, p, where);
  if (wants(cfg, "tokenizer") && dist.is_main()) result.tokenizer_s = run_tokenizer_stage(cfg, p, where);
  dist.barrier();
  // Each model is evaluated as soon as it is trained, and its row shown before the next
  // stage starts: the table grows while the pipeline runs.
  for (const TrainedStage& t : trained_stages(p, docs)) {
    StageSummary s = train_stage(cfg, p, t, where, dist);
    if (wants(cfg, "eval")) evaluate_stage(s, docs, p, where, dist);
    dist.barrier();
    if (!dist.is_main()) continue;
    result.stages.push_back(s);
    const bool first_row = result.stages.size() == 1 && result.compared.empty();
    if (hooks.on_table) hooks.on_table((first_row ? summary_header() : std::string()) + summary_row(s));
  }
  if (!dist.is_main()) return result;
  if (wants(cfg, "report")) {
    const double t0 = now_seconds();
    result.report = write_pipeline_report(result, p);
    result.report_s = now_seconds() - t0;
  }
  result.total_s = now_seconds() - t_start;
  result.summary = cfg.run_dir + "/summary.json";
  write_summary(result, cfg.run_dir);
  return result;
}

std::vector<std::string> summary_columns() {
  return {"stage", "parameters", "math pass@1", "code pass@1", "all pass@1", "train", "eval"};
}

std::vector<std::string> summary_cells(const StageSummary& s) {
  char params[32];
  std::snprintf(params, sizeof params, "%.3fM", static_cast<double>(s.parameters) / 1e6);
  return {s.label.empty() ? s.stage : s.label, params, fmt_pct(s.math_pass1), fmt_pct(s.code_pass1), fmt_pct(s.all_pass1),
          s.train_s > 0 ? fmt_duration(s.train_s) : "reused", fmt_duration(s.eval_s)};
}

std::string summary_header() { return table_line(summary_columns()); }

std::string summary_row(const StageSummary& s) { return table_line(summary_cells(s)); }

std::vector<std::string> summary_notes(const std::vector<StageSummary>& stages) {
  const StageSummary* teacher = nullptr;
  const StageSummary* student = nullptr;
  const StageSummary* grpo = nullptr;
  for (const auto& s : stages) {
    if (s.stage == "teacher") teacher = &s;
    if (s.stage == "student") student = &s;
    if (s.stage == "grpo") grpo = &s;
  }
  std::vector<std::string> notes;
  char line[256];
  if (teacher && student && teacher->parameters > 0) {
    std::snprintf(line, sizeof line, "student/teacher parameters: %.3f",
                  static_cast<double>(student->parameters) / static_cast<double>(teacher->parameters));
    notes.push_back(line);
  }
  if (teacher && student && teacher->all_pass1 > 0 && student->all_pass1 >= 0) {
    std::snprintf(line, sizeof line, "distilled student / teacher held-out accuracy: %.2f (target >= 0.80)",
                  student->all_pass1 / teacher->all_pass1);
    notes.push_back(line);
  }
  if (student && grpo && student->all_pass1 >= 0 && grpo->all_pass1 >= 0) {
    std::snprintf(line, sizeof line, "GRPO over the distilled student: %+.1f points of held-out pass@1 (target >= +5)",
                  100.0 * (grpo->all_pass1 - student->all_pass1));
    notes.push_back(line);
  }
  return notes;
}

std::vector<std::string> comparison_notes(const std::vector<StageSummary>& compared, const std::vector<StageSummary>& stages) {
  std::vector<std::string> notes;
  char line[256];
  for (const auto& mine : stages) {
    for (const auto& theirs : compared) {
      if (theirs.stage != mine.stage || mine.math_pass1 < 0 || theirs.math_pass1 < 0) continue;
      const bool tools = mine.label != mine.stage;
      std::snprintf(line, sizeof line, "%s over %s: %+.1f points of held-out math pass@1%s", mine.label.c_str(), theirs.label.c_str(),
                    100.0 * (mine.math_pass1 - theirs.math_pass1), tools && mine.stage == "student" ? " (target >= +15)" : "");
      notes.push_back(line);
    }
  }
  return notes;
}

std::string format_summary(const PipelineResult& r) {
  std::ostringstream o;
  o << summary_header();
  for (const auto& s : r.compared) o << summary_row(s);
  for (const auto& s : r.stages) o << summary_row(s);
  for (const auto& n : all_notes(r)) o << n << "\n";
  char line[256];
  std::snprintf(line, sizeof line, "data %s, tokenizer %s, report %s, total %s\n", fmt_duration(r.data_s).c_str(),
                fmt_duration(r.tokenizer_s).c_str(), fmt_duration(r.report_s).c_str(), fmt_duration(r.total_s).c_str());
  o << line;
  if (!r.report.empty()) o << "report: " << r.report << "\n";
  o << "summary: " << r.summary << "\n";
  return o.str();
}

}  // namespace retort
