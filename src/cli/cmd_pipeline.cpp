// `retort run|sft|distill|grpo|eval|audit|report`.
#include "cli/commands.h"

namespace retort::cli {

void register_pipeline_commands(CLI::App& app) {
  add_pending_command(app, "run", "run the pipeline stages named in a config, in order");
  add_pending_command(app, "sft", "supervised fine-tuning on reasoning traces");
  add_pending_command(app, "distill", "SFT plus teacher-guided distillation (logit, feature, attention)");
  add_pending_command(app, "grpo", "GRPO with verifiers, sandbox and a KL anchor");
  add_pending_command(app, "eval", "pass@1, pass@k and maj@k on prompt files");
}

}  // namespace retort::cli
