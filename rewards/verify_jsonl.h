// `retort verify NAME [--args JSON]`: the JSONL scoring loop, kept in the library so that
// it is tested without the executable.
//
//   stdin:  one sample per line: {"completion": "...", "prompt"?: "...", ...row fields
//           ("answer", "tests", "test_list", ...)}; blank lines are skipped
//   stdout: one line per sample, in input order: {"reward": x | null, "passed": b, "detail": {...}}
#pragma once

#include <iosfwd>  // defines: std::istream, std::ostream
#include <string>  // defines: std::string
#include <vector>  // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

namespace retort::rewards {

struct VerifyCliOptions {
  std::string name;                  // verifier name (built-in or from a plugin)
  nlohmann::json args = nlohmann::json::object();
  std::vector<std::string> plugins;  // .so files to load first
  nlohmann::json sandbox = nlohmann::json::object();  // sandbox::ExecutorConfig for code verification
  int batch = 256;                   // samples scored together (in parallel)
  double deadline_s = 300;           // per batch
};

// Scores every line of `in`, writes one answer per line to `out`. A line that is not a JSON
// object, or lacks "completion", throws retort::Error naming the line ("stdin:3").
// Returns the number of samples scored.
int verify_jsonl(std::istream& in, std::ostream& out, const VerifyCliOptions& opt);

}  // namespace retort::rewards
