// `retort verify NAME`.
#include "cli/commands.h"

namespace retort::cli {

void register_rewards_commands(CLI::App& app) {
  add_pending_command(app, "verify", "score completions with a verifier (stdin: JSON samples; stdout: scores)");
}

}  // namespace retort::cli
