// `retort audit RUN_DIR [filters]` and `retort report RUN_DIR`. Thin wrappers: the work and
// its tests live in src/audit (run_audit, write_report).
#include <iostream>  // defines: std::cout

#include "audit/audit_command.h"  // defines: run_audit, AuditOptions
#include "audit/report.h"         // defines: write_report, ReportOptions
#include "cli/commands.h"
#include "common/error.h"         // defines: retort::Error

namespace retort::cli {

namespace {

struct AuditArgs {
  audit::AuditOptions opt;
  std::string step;
  double reward_min = 0, reward_max = 0;
  bool truncated = false, not_truncated = false;
  int64_t limit = -1;
  int64_t min_tool_calls = 0, max_tool_calls = 0;
};

}  // namespace

void register_audit_commands(CLI::App& app) {
  auto a = std::make_shared<AuditArgs>();
  CLI::App* audit = app.add_subcommand(
      "audit",
      "query the sampled chains of a run (RUN_DIR/chains.jsonl). stdout: each matching chain as a JSON line; "
      "--show prints them readably, --summary prints tables (pass rate per step, lengths, tool calls, failure reasons, "
      "flags)");
  audit->add_option("run_dir", a->opt.run_dir, "run folder (or a chains .jsonl file)")->required();
  audit->add_option("--step", a->step, "steps A:B inclusive (also A:, :B, A)");
  audit->add_option("--prompt", a->opt.filter.prompt_ids, "prompt id; repeatable (any of them)")
      ->allow_extra_args(false);
  audit->add_option("--passed", a->opt.filter.passed, "chains where VERIFIER passed ('all' = every applicable one); repeatable")
      ->allow_extra_args(false);
  audit->add_option("--failed", a->opt.filter.failed, "chains where VERIFIER applied and failed ('all' = not every one passed); repeatable")
      ->allow_extra_args(false);
  CLI::Option* rmin = audit->add_option("--reward-min", a->reward_min, "combined reward at least this");
  CLI::Option* rmax = audit->add_option("--reward-max", a->reward_max, "combined reward at most this");
  CLI::Option* tr = audit->add_flag("--truncated", a->truncated, "only chains cut at the length limit");
  audit->add_flag("--not-truncated", a->not_truncated, "only chains that ended by themselves")->excludes(tr);
  audit->add_option("--sandbox-status", a->opt.filter.sandbox_status,
                    "ok, runtime_error, compile_error, time_limit, memory_limit, output_limit, sandbox_error or "
                    "deadline; repeatable (any of them)")
      ->allow_extra_args(false);
  audit->add_option("--tool-status", a->opt.filter.tool_status,
                    "chains with a tool call that ended ok, runtime_error, compile_error, time_limit, memory_limit, "
                    "output_limit, sandbox_error or budget; repeatable (any of them)")
      ->allow_extra_args(false);
  CLI::Option* tmin = audit->add_option("--min-tool-calls", a->min_tool_calls, "chains with at least N tool calls")
                          ->check(CLI::NonNegativeNumber);
  CLI::Option* tmax = audit->add_option("--max-tool-calls", a->max_tool_calls,
                                        "chains with at most N tool calls (0 = chains that called no tool)")
                          ->check(CLI::NonNegativeNumber);
  audit->add_option("--grep", a->opt.filter.grep, "PCRE2 regular expression searched in the completion text");
  audit->add_flag("-i,--ignore-case", a->opt.filter.grep_ignore_case, "--grep ignores case");
  audit->add_option("--flag", a->opt.filter.flags,
                    "chains with this reward-hacking flag: empty_reasoning, answer_contradicts_reasoning, "
                    "repeated_ngrams, mixed_languages, answer_format, constant_output, answer_from_constant_print; repeatable")
      ->allow_extra_args(false);
  audit->add_flag("--summary", a->opt.summary, "print summary tables instead of the chains");
  audit->add_flag("--json", a->opt.summary_json, "with --summary: the summary as one JSON object");
  audit->add_flag("--show", a->opt.show, "print chains readably: reasoning, answer, verifier verdicts, flags");
  audit->add_option("--limit", a->limit, "print at most N chains")->check(CLI::NonNegativeNumber);
  audit->add_option("--top", a->opt.top, "rows of the failure-reason tables (default 10)")->check(CLI::PositiveNumber);
  audit->callback([a, rmin, rmax, tr, tmin, tmax] {
    if (!a->step.empty()) audit::parse_step_range(a->step, a->opt.filter);
    if (rmin->count()) a->opt.filter.reward_min = a->reward_min;
    if (rmax->count()) a->opt.filter.reward_max = a->reward_max;
    if (tr->count()) a->opt.filter.truncated = true;
    if (tmin->count()) a->opt.filter.tool_calls_min = a->min_tool_calls;
    if (tmax->count()) a->opt.filter.tool_calls_max = a->max_tool_calls;
    if (a->not_truncated) a->opt.filter.truncated = false;
    if (a->opt.summary_json && !a->opt.summary)
      throw Error(ErrorInfo{"--json goes with --summary", "retort audit", "--summary --json",
                            "--json alone", "matching chains are JSON lines already; add --summary for the summary"});
    a->opt.limit = a->limit;
    audit::run_audit(a->opt, std::cout);
  });

  auto r = std::make_shared<audit::ReportOptions>();
  CLI::App* report = app.add_subcommand(
      "report", "write RUN_DIR/report.html: one self-contained page with metric curves, pass rates, failure reasons, "
                "reward-hacking flags, evaluation and a chain browser. stdout: {\"report\": PATH, ...}");
  report->add_option("run_dir", r->run_dir, "run folder")->required();
  report->add_option("--out", r->out, "write the page here instead of RUN_DIR/report.html");
  report->add_option("--per-step", r->per_step, "chains sampled from each step (default 8)")->check(CLI::NonNegativeNumber);
  report->add_option("--max-failures", r->max_failures, "failed chains embedded at most (default 400)")->check(CLI::NonNegativeNumber);
  report->add_option("--max-flagged", r->max_flagged, "flagged chains embedded at most (default 200)")->check(CLI::NonNegativeNumber);
  report->add_option("--max-chains", r->max_chains, "chains embedded in all at most (default 2000)")->check(CLI::NonNegativeNumber);
  report->add_option("--max-chars", r->max_field_chars, "bytes kept of each text field (default 6000)")->check(CLI::PositiveNumber);
  report->callback([r] {
    audit::ReportResult res = audit::write_report(*r);
    std::cout << nlohmann::json{{"report", res.path}, {"chains", res.chains}, {"embedded", res.embedded},
                                {"metric_rows", res.metric_rows}, {"eval", res.eval}}
                     .dump()
              << std::endl;
  });
}

}  // namespace retort::cli
