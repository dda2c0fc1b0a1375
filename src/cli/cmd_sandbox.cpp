// `retort sandbox run`: stdin one Job per line (JSON), stdout one Result per line, in input
// order. A thin wrapper: the logic (and its tests) live in sandbox/ (run_jobs_jsonl).
//
// A line that is not a valid Job is answered in place with a sandbox_error Result whose
// detail names the line ("stdin:3: ..."), so that output line N always answers input line N;
// the same message goes to stderr, and the command then exits with status 1.
#include <iostream>  // defines: std::cin, std::cout

#include "cli/commands.h"
#include "common/config.h"     // defines: load_json_file, apply_override, parse_config
#include "common/error.h"      // defines: retort::Error
#include "sandbox/executor.h"  // defines: ExecutorConfig, run_jobs_jsonl

namespace retort::cli {

namespace {

struct SandboxRunArgs {
  std::string config;                  // a config file; its "sandbox" object (or the whole file) is the pool's config
  int workers = -1;                    // overrides sandbox.workers when >= 0
  std::vector<std::string> overrides;  // sandbox.key=value
};

sandbox::ExecutorConfig resolve_config(const SandboxRunArgs& a) {
  json doc = json::object();
  std::string where = "command line";
  if (!a.config.empty()) {
    json file = load_json_file(a.config);
    where = a.config;
    doc["sandbox"] = file.contains("sandbox") ? file["sandbox"] : file;
  }
  if (!doc.contains("sandbox")) doc["sandbox"] = json::object();
  for (const auto& o : a.overrides) {
    // Accept both "sandbox.workers=8" and "workers=8".
    apply_override(doc, o.rfind("sandbox.", 0) == 0 ? o : "sandbox." + o);
  }
  if (a.workers >= 0) doc["sandbox"]["workers"] = a.workers;
  return parse_config<sandbox::ExecutorConfig>(doc["sandbox"], where, "sandbox");
}

}  // namespace

void register_sandbox_commands(CLI::App& app) {
  CLI::App* sandbox = app.add_subcommand("sandbox", "run untrusted programs in the sandbox");
  sandbox->require_subcommand(1);
  auto args = std::make_shared<SandboxRunArgs>();
  CLI::App* run = sandbox->add_subcommand(
      "run",
      "stdin: one Job per line as JSON {\"language\", \"source\", \"stdin\", \"files\", \"limits\": {...}}; "
      "stdout: one Result per line, in input order");
  run->add_option("--config", args->config, "config file (its \"sandbox\" object configures the pool)");
  run->add_option("--workers", args->workers, "jobs run at once (0 = one per core)");
  run->add_option("overrides", args->overrides, "sandbox.key=value overrides, e.g. sandbox.isolation=rlimits-only");
  run->callback([args] {
    sandbox::ExecutorConfig cfg = resolve_config(*args);
    int bad = sandbox::run_jobs_jsonl(std::cin, std::cout, cfg);
    if (bad > 0) exit_status() = 1;
  });
}

}  // namespace retort::cli
