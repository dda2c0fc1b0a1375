// `retort audit RUN_DIR [filters]` as a function of its options and an output stream, so
// that the command's behaviour is tested without the executable (src/cli/cmd_audit.cpp only
// parses flags).
#pragma once

#include <cstdint>  // defines: int64_t
#include <ostream>  // defines: std::ostream
#include <string>   // defines: std::string

#include "audit/query.h"  // defines: ChainFilter, FlagOptions, ChainView

namespace retort::audit {

struct AuditOptions {
  std::string run_dir;      // a run folder (its chains.jsonl is read) or a chains .jsonl file
  ChainFilter filter;
  bool show = false;        // print matching chains readably instead of as JSON lines
  bool summary = false;     // print summary tables (without chains unless `show`)
  bool summary_json = false;  // the summary as one JSON object instead of tables
  int64_t limit = -1;       // chains printed at most; -1 = all. Without --summary, reading stops there.
  size_t top = 10;          // rows of the failure-reason and repeated-answer tables
  FlagOptions flags;
};

struct AuditResult {
  int64_t scanned = 0;  // chains read
  int64_t matched = 0;  // chains that passed the filter (counted to the end only with a summary)
  int64_t printed = 0;  // chains written to `out`
};

// Streams RUN_DIR/chains.jsonl through the filter. Default output: each matching line as
// it is in the file (JSON lines). Throws retort::Error for a bad file or a filter that
// names a verifier no chain has.
AuditResult run_audit(const AuditOptions& opt, std::ostream& out);

// One chain for a reader: header, prompt, reasoning, answer, verifier verdicts, flags.
std::string show_chain(const ChainView& c, const json& chain, const FlagOptions& flags);

// RUN_DIR/chains.jsonl, or RUN_DIR itself when it is a file.
std::string chains_path(const std::string& run_dir);

}  // namespace retort::audit
