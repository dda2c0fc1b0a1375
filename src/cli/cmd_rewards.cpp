// `retort verify NAME [--args JSON]`: stdin one JSON sample per line ({"completion", plus the
// row's fields: "answer", "tests", ...}), stdout one {"reward", "passed", "detail"} per line.
// A thin wrapper: the loop (and its tests) live in rewards/ (verify_jsonl).
#include <iostream>  // defines: std::cin, std::cout

#include "cli/commands.h"
#include "common/config.h"          // defines: parse_json_text, load_json_file
#include "common/error.h"           // defines: retort::Error
#include "rewards/verify_jsonl.h"   // defines: verify_jsonl, VerifyCliOptions

namespace retort::cli {

namespace {

struct VerifyArgs {
  std::string name;
  std::string args = "{}";             // JSON object: the verifier's args
  std::vector<std::string> plugins;    // .so files exporting retort_register_verifiers
  std::string sandbox_config;          // a config file whose "sandbox" object configures the pool
  int batch = 256;
  double deadline_s = 300;
};

}  // namespace

void register_rewards_commands(CLI::App& app) {
  auto a = std::make_shared<VerifyArgs>();
  CLI::App* verify = app.add_subcommand(
      "verify",
      "score completions with a verifier. stdin: one JSON sample per line {\"completion\", ...row fields such as "
      "\"answer\" or \"tests\"}; stdout: one {\"reward\", \"passed\", \"detail\"} per line (reward null = not applicable)");
  verify->add_option("name", a->name, "verifier: math, code, format, tag_count, overlong, cosine_length, repetition, "
                                      "external, or one a plugin adds")
      ->required();
  verify->add_option("--args", a->args, "the verifier's args as a JSON object, e.g. '{\"rel_tol\": 1e-4}'");
  verify->add_option("--plugin", a->plugins, "a verifier plugin (.so) to load first; repeatable");
  verify->add_option("--sandbox-config", a->sandbox_config, "config file whose \"sandbox\" object configures the pool");
  verify->add_option("--batch", a->batch, "samples scored together, in parallel (default 256)");
  verify->add_option("--deadline", a->deadline_s, "seconds per batch before unanswered samples score 0 (default 300)");
  verify->callback([a] {
    rewards::VerifyCliOptions opt;
    opt.name = a->name;
    opt.args = parse_json_text(a->args, "--args");
    if (!opt.args.is_object())
      throw Error(ErrorInfo{"--args must be a JSON object", "--args", "{...}", a->args, "e.g. --args '{\"rel_tol\": 1e-4}'"});
    opt.plugins = a->plugins;
    if (!a->sandbox_config.empty()) {
      json file = load_json_file(a->sandbox_config);
      opt.sandbox = file.contains("sandbox") ? file["sandbox"] : file;
    }
    opt.batch = a->batch;
    opt.deadline_s = a->deadline_s;
    rewards::verify_jsonl(std::cin, std::cout, opt);
  });
}

}  // namespace retort::cli
