// Subcommand registration: one function per module, called once from main() in one
// explicit list (docs/architecture.md section 4 lists them).
#pragma once

#include <functional>  // defines: std::function
#include <string>      // defines: std::string

#include <CLI/CLI.hpp>  // defines: CLI::App

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

// The exit status main() returns after a subcommand callback; 0 unless a callback set it.
int& exit_status();

}  // namespace retort::cli
