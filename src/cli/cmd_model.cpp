// `retort generate` and `retort score`.
#include "cli/commands.h"

namespace retort::cli {

void register_model_commands(CLI::App& app) {
  add_pending_command(app, "generate", "sample completions from a checkpoint");
  add_pending_command(app, "score", "log-probabilities of token sequences under a checkpoint");
}

}  // namespace retort::cli
