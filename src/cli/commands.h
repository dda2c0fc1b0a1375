// Subcommand registration: one function per module, called once from main() in one
// explicit list (docs/architecture.md section 4 lists them).
#pragma once

#include <cmath>       // defines: std::isfinite
#include <functional>  // defines: std::function
#include <string>      // defines: std::string
#include <vector>      // defines: std::vector

#include <CLI/CLI.hpp>  // defines: CLI::App

#include "common/config.h"  // defines: Range
#include "common/error.h"   // defines: retort::Error

namespace retort::cli {

// Each register_* adds its subcommands to `app`. A subcommand's callback does its work
// and throws retort::Error on bad input; main() turns that into one stderr line.
void register_tokenizer_commands(CLI::App& app);  // tokenize, tokenizer train
void register_sandbox_commands(CLI::App& app);    // sandbox run
void register_rewards_commands(CLI::App& app);    // verify
void register_model_commands(CLI::App& app);      // generate, score
void register_pipeline_commands(CLI::App& app);   // run, sft, distill, grpo, eval
void register_audit_commands(CLI::App& app);      // audit, report
void register_launch_commands(CLI::App& app);     // launch (data parallel on one machine)

// The names of `app`'s subcommands, in registration order.
std::vector<std::string> subcommand_names(const CLI::App& app);

// "unknown subcommand 'x' (expected one of: ...). Hint: did you mean 'y'?"
Error unknown_subcommand_error(const std::string& word, const std::vector<std::string>& names, const std::string& where);

// A CLI11 validator from a config Range, so that options are checked like config fields:
// "--top-p: -1 is out of range (expected in (0, 1])".
inline CLI::Validator in_range(const Range& range) {
  return CLI::Validator(
      [range](std::string& s) -> std::string {
        double v = 0;
        try {
          size_t used = 0;
          v = std::stod(s, &used);
          if (used != s.size()) return "'" + s + "' is not a number";
        } catch (const std::exception&) {
          return "'" + s + "' is not a number";
        }
        if (!std::isfinite(v) || !range.contains(v)) return s + " is out of range (expected " + range.describe() + ")";
        return "";
      },
      range.describe());
}

// The exit status main() returns after a subcommand callback; 0 unless a callback set it.
int& exit_status();

}  // namespace retort::cli
