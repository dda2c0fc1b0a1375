// report.html: one self-contained page (inline CSS, JS and SVG; nothing fetched) that shows a
// run: a results table first when the run has one (RUN_DIR/results.json: the pipeline's
// held-out accuracy per stage), then its config, evaluation results, metric curves, pass
// rates, lengths, failure reasons, reward-hacking flags and a chain browser.
//
// Model text is untrusted: everything rendered as HTML is escaped here, the chains are
// embedded as JSON with '<', '>' and '&' written as \u escapes (so "</script>" in a chain
// cannot end the script element), and the page's script only ever sets textContent.
//
// What it deliberately is not: a viewer of every chain. A run can sample millions; the page
// embeds a capped selection (a sample per step, failures and flagged chains, texts cut) and
// says what it left out. `retort audit` queries the whole file.
#pragma once

#include <cstdint>  // defines: int64_t
#include <string>   // defines: std::string

#include "audit/query.h"  // defines: FlagOptions

namespace retort::audit {

struct ReportOptions {
  std::string run_dir;
  std::string out;                 // "" = RUN_DIR/report.html
  int64_t per_step = 8;            // chains sampled (uniformly, fixed seed) from each step
  int64_t max_failures = 400;      // chains that failed a verifier, sampled over the run
  int64_t max_flagged = 200;       // chains with a reward-hacking flag, sampled over the run
  int64_t max_chains = 2000;       // embedded chains in all; flagged first, then failures, then samples
  int64_t max_field_chars = 6000;  // bytes kept of each text field (prompt, reasoning, answer, details)
  size_t top = 15;                 // rows of the failure-reason and repeated-answer tables
  uint64_t seed = 1234;            // sampling seed: the same run gives the same page
  FlagOptions flags;
};

struct ReportResult {
  std::string path;                // the file written
  int64_t chains = 0;              // chains in chains.jsonl
  int64_t embedded = 0;            // chains in the page
  int64_t metric_rows = 0;         // lines of metrics.jsonl
  bool eval = false;               // eval.json was found and shown
  bool results = false;            // results.json was found and opens the page
};

// Reads RUN_DIR/{config.resolved.json, metrics.jsonl, chains.jsonl, eval.json, results.json}
// (each optional, but one of metrics.jsonl and chains.jsonl must exist) and writes the page
// atomically. results.json is {"title", "columns": [names], "rows": [[a cell per column]],
// "notes": [lines]}; one of another shape is an error naming the file.
ReportResult write_report(const ReportOptions& opt);

// HTML-escapes text for element content and attribute values (& < > " ').
std::string html_escape(const std::string& s);

// JSON for a <script type="application/json"> element: '<', '>', '&', U+2028 and U+2029 as
// \u escapes, so no model text can close the element or open a comment.
std::string json_for_script(const json& j);

}  // namespace retort::audit
