// `retort run|sft|distill|grpo|eval|audit|report`.
#include "cli/commands.h"

#include <cstdio>  // defines: std::fputs, std::fflush

#include "common/config.h"
#include "common/error.h"
#include "train/eval.h"
#include "train/grpo.h"
#include "train/pipeline.h"
#include "train/sft.h"

namespace retort::cli {

namespace {
// A stage subcommand: CONFIG plus key.sub=value overrides.
struct StageArgs {
  std::string config;
  std::vector<std::string> overrides;
};
CLI::App* add_stage(CLI::App& app, const std::string& name, const std::string& description, std::shared_ptr<StageArgs> args) {
  CLI::App* cmd = app.add_subcommand(name, description);
  cmd->add_option("config", args->config, "JSON config (comments allowed)")->required();
  cmd->add_option("overrides", args->overrides, "key.sub=value overrides, applied in order");
  return cmd;
}
}  // namespace

void register_pipeline_commands(CLI::App& app) {
  auto run_args = std::make_shared<StageArgs>();
  add_stage(app, "run", "the whole pipeline: data, tokenizer, teacher, student (distillation), GRPO, evaluation, report", run_args)
      ->callback([run_args] {
        // Each stage's row as soon as it is evaluated (flushed: the log on stderr goes on
        // between rows), then the whole table.
        PipelineHooks hooks;
        hooks.on_table = [](const std::string& lines) {
          std::fputs(lines.c_str(), stdout);
          std::fflush(stdout);
        };
        PipelineResult r = run_pipeline(load_json_file(run_args->config), run_args->config, run_args->overrides, hooks);
        if (r.main_rank) std::fputs(format_summary(r).c_str(), stdout);
      });

  auto sft_args = std::make_shared<StageArgs>();
  add_stage(app, "sft", "supervised fine-tuning on reasoning traces (resumes a killed run)", sft_args)->callback([sft_args] {
    run_sft(load_json_file(sft_args->config), sft_args->config, sft_args->overrides);
  });

  auto distill_args = std::make_shared<StageArgs>();
  add_stage(app, "distill", "SFT plus teacher-guided distillation (logit, feature, attention; progressive schedule)", distill_args)
      ->callback([distill_args] {
        nlohmann::json doc = load_json_file(distill_args->config);
        for (const auto& o : distill_args->overrides) apply_override(doc, o);
        bool offline = doc.contains("distill") && doc["distill"].is_object() && doc["distill"].contains("logit") &&
                       doc["distill"]["logit"].is_object() && doc["distill"]["logit"].value("kind", "") == "offline";
        if (!offline && (!doc.contains("distill") || !doc["distill"].is_object() || doc["distill"].value("teacher", "").empty())) {
          throw Error(ErrorInfo{"retort distill needs a teacher", distill_args->config, "distill.teacher = a checkpoint folder, or distill.logit.kind = offline",
                                "none", "use retort sft for training without a teacher"});
        }
        run_sft(doc, distill_args->config);
      });
  auto grpo_args = std::make_shared<StageArgs>();
  add_stage(app, "grpo", "GRPO with verifiers, sandbox and a KL anchor (resumes a killed run)", grpo_args)->callback([grpo_args] {
    run_grpo(load_json_file(grpo_args->config), grpo_args->config, grpo_args->overrides);
  });
  auto eval_args = std::make_shared<StageArgs>();
  add_stage(app, "eval", "pass@1, pass@k and maj@k of a checkpoint on prompt files; writes eval.json", eval_args)->callback([eval_args] {
    run_eval(load_json_file(eval_args->config), eval_args->config, eval_args->overrides);
  });
}

}  // namespace retort::cli
