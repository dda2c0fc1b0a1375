// The language table: how a job's source becomes a running program. Data, not code: a new
// language is one more entry in languages.cpp.
//
// Paths are those inside the sandbox (/usr is the host's, read-only). Interpreters are named
// by absolute path: inside the sandbox PATH holds only /usr/bin:/bin, and a user-installed
// python (pyenv, conda) outside /usr is deliberately not visible.
#pragma once

#include <string>   // defines: std::string
#include <utility>  // defines: std::pair
#include <vector>   // defines: std::vector

#include "sandbox/executor.h"  // defines: Limits

namespace retort::sandbox {

struct Language {
  std::string name;                      // "python", as Job::language names it
  std::string source_file;               // the source is written to the work dir under this name
  std::vector<std::string> compile;      // argv run in the work dir to build `artifact`; empty: interpreted
  std::string artifact;                  // file the compile step produces (relative to the work dir)
  std::vector<std::string> run;          // argv of the program
  std::vector<std::string> env;          // extra environment for compile and run ("K=V")
  Limits compile_limits;                 // limits of the compile step (output_kb caps the diagnostics)
  bool warm_capable = false;             // can run in a warm worker (a pre-started interpreter forks per job)
};

// nullptr when `name` is not in the table.
const Language* find_language(const std::string& name);
// "python, cpp, c" for error messages.
std::string language_names();

}  // namespace retort::sandbox
