// retort — command-line entry point. The only place where an error becomes an exit status:
// one clear line on stderr, stdout untouched (it is machine-readable).
//
// Bad input (a retort::Error, a command-line error) is one line naming the place. Anything
// else that reaches a subcommand's boundary (a library exception, an allocation that failed)
// is also one line, naming the subcommand; its full text (a LibTorch error carries a C++
// stack trace) is printed only with RETORT_DEBUG=1.
#include <algorithm>  // defines: std::find
#include <cstdio>   // defines: std::fprintf
#include <cstdlib>  // defines: std::getenv
#include <iostream>  // defines: std::cout
#include <new>      // defines: std::bad_alloc

#include "cli/commands.h"
#include "common/config.h"  // defines: closest_match
#include "common/error.h"

namespace retort::cli {

int& exit_status() {
  static int status = 0;
  return status;
}

std::vector<std::string> subcommand_names(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::App* s : app.get_subcommands([](const CLI::App*) { return true; })) names.push_back(s->get_name());
  return names;
}

Error unknown_subcommand_error(const std::string& word, const std::vector<std::string>& names, const std::string& where) {
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
  const std::string near = closest_match(word, names);
  return Error(ErrorInfo{"unknown subcommand " + quote_for_error(word), where, "one of: " + list, "",
                         near.empty() ? "run retort --help" : "did you mean '" + near + "'?"});
}

}  // namespace retort::cli

namespace {

bool debug_mode() {
  const char* d = std::getenv("RETORT_DEBUG");
  return d && *d && std::string(d) != "0";
}

// The text of an error as one line: its first line (a LibTorch error's stack trace follows on
// the next lines), or all of it, newlines kept, in debug mode.
std::string one_line(const std::string& text) {
  if (debug_mode()) return text;
  std::string line = text.substr(0, text.find('\n'));
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
  return line;
}

// "retort sft" when a subcommand was parsed, else "retort".
std::string command_name(const CLI::App& app) {
  std::string name = "retort";
  for (const CLI::App* s : app.get_subcommands()) name += " " + s->get_name();
  return name;
}

}  // namespace

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

  // A first word that is no subcommand: name it and the subcommands, not CLI11's two lines.
  if (argc > 1 && argv[1][0] != '-') {
    const auto names = retort::cli::subcommand_names(app);
    if (std::find(names.begin(), names.end(), argv[1]) == names.end()) {
      std::fprintf(stderr, "retort: error: %s\n", retort::cli::unknown_subcommand_error(argv[1], names, "").what());
      return 1;
    }
  }

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --help-all
    std::fprintf(stderr, "%s: error: %s Hint: run %s --help.\n", command_name(app).c_str(), one_line(e.what()).c_str(),
                 command_name(app).c_str());
    return e.get_exit_code();
  } catch (const retort::Error& e) {
    std::fprintf(stderr, "%s: error: %s\n", command_name(app).c_str(), one_line(e.what()).c_str());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: error: out of memory: an allocation failed (the model, the batch, max_length or a cache is too large for this machine)\n",
                 command_name(app).c_str());
    return 1;
  } catch (const std::exception& e) {
    // A library's exception at the subcommand's boundary: its message, without the stack trace.
    std::fprintf(stderr, "%s: error: %s%s\n", command_name(app).c_str(), one_line(e.what()).c_str(),
                 debug_mode() ? "" : " (set RETORT_DEBUG=1 for the details)");
    return 2;
  }
  // stdout is the output of several subcommands: a failed write of it is an error too.
  std::cout.flush();
  if (!std::cout || std::fflush(stdout) != 0 || std::ferror(stdout)) {
    std::fprintf(stderr, "%s: error: cannot write to standard output (disk full or a closed pipe?)\n", command_name(app).c_str());
    return 1;
  }
  return retort::cli::exit_status();
}
