// The external process verifier: any executable, in any language, that reads one JSON
// sample per line on stdin and writes one JSON score per line on stdout.
//
//   in:  {"prompt": "...", "completion": "...", "row": {...}, "completion_tokens": N}
//   out: {"reward": 0.5, "passed": false, "detail": {...}}   ("reward": null = not applicable)
//
// The process is long-lived (one start, many samples) and runs under resource limits:
// address space, open files, file size, no core dumps, its own session (the whole group is
// killed on timeout), killed with us (PR_SET_PDEATHSIG). A crash or a sample that takes
// longer than timeout_s kills it; the sample scores 0 with a detail that says why, and the
// next sample gets a fresh process. Several processes serve samples in parallel.
//
// Not the sandbox: a long-lived process cannot go through the one-shot sandbox pool, so
// this runs only programs the user trusts (their own verifier), with limits against
// accidents, not against attacks.
#pragma once

#include <cstdint>  // defines: int64_t
#include <memory>   // defines: std::shared_ptr
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

#include "common/config.h"     // defines: retort::ConfigBinder
#include "rewards/verifier.h"  // defines: Verifier

namespace retort::rewards {

struct ExternalVerifierOptions {
  std::vector<std::string> command;  // argv: ["python3", "my_verifier.py", "--flag"]
  int processes = 2;                 // processes serving samples in parallel
  double timeout_s = 10;             // per sample, from writing the line to reading the answer
  double startup_s = 30;             // added to the timeout of the first sample after a (re)start: interpreters load slowly
  int64_t memory_mb = 2048;          // RLIMIT_AS of each process
  int open_files = 256;              // RLIMIT_NOFILE
  int64_t file_size_kb = 65536;      // RLIMIT_FSIZE
  int max_restarts = 1000;           // after this many restarts the verifier gives up (reward 0, detail says so)
  std::string workdir;               // working directory of the process ("" = ours)
  bool quiet = false;                // discard the process's stderr (default: it goes to ours)
  void bind(retort::ConfigBinder& b);
};

std::shared_ptr<Verifier> make_external_verifier(const ExternalVerifierOptions& opt);

}  // namespace retort::rewards
