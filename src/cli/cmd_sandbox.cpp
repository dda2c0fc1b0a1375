// `retort sandbox run`.
#include "cli/commands.h"

namespace retort::cli {

void register_sandbox_commands(CLI::App& app) {
  CLI::App* sandbox = app.add_subcommand("sandbox", "run untrusted programs in the sandbox");
  sandbox->require_subcommand(1);
  add_pending_command(*sandbox, "run", "stdin: one Job per line as JSON; stdout: one Result per line");
}

}  // namespace retort::cli
