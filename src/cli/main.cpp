// retort — command-line entry point. The only place where a retort::Error becomes an
// exit status: one clear line on stderr, stdout untouched (it is machine-readable).
#include <cstdio>  // defines: std::fprintf

#include "cli/commands.h"
#include "common/error.h"

namespace retort::cli {

int& exit_status() {
  static int status = 0;
  return status;
}

}  // namespace retort::cli

int main(int argc, char** argv) {
  CLI::App app{"retort: distil reasoning into small language models (SFT + distillation, GRPO, audit)"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "show help for every subcommand");

  // One explicit list: the order is the order of `retort --help`.
  retort::cli::register_pipeline_commands(app);
  retort::cli::register_audit_commands(app);
  retort::cli::register_launch_commands(app);
  retort::cli::register_model_commands(app);
  retort::cli::register_tokenizer_commands(app);
  retort::cli::register_rewards_commands(app);
  retort::cli::register_sandbox_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const retort::Error& e) {
    std::fprintf(stderr, "retort: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    // Anything else is a bug in retort, not bad input: say so.
    std::fprintf(stderr, "retort: internal error: %s\n", e.what());
    return 2;
  }
  return retort::cli::exit_status();
}
