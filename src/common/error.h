// retort::Error — the one exception type of the project.
//
// Library code throws it with a whole sentence: what went wrong, where (file:line of the
// input, config key, tensor name...), what was expected and what was found, and a hint
// that tells the user what to do. Only main() turns it into an exit code. Results of
// untrusted work (sandbox jobs, verifier outcomes) are values, never exceptions.
#pragma once

#include <stdexcept>  // defines: std::exception
#include <string>     // defines: std::string

namespace retort {

struct ErrorInfo {
  std::string what;      // "unknown config key 'lr_max'"
  std::string where;     // "configs/demo.json: sft" or "traces.jsonl:17"
  std::string expected;  // "one of: lr, warmup_steps, ..."
  std::string got;       // "lr_max"
  std::string hint;      // "check the spelling; `retort sft --help` lists the keys"
};

class Error : public std::exception {
 public:
  explicit Error(ErrorInfo info);
  // Shorthand for the common case of a message plus a hint.
  Error(std::string what, std::string where, std::string hint = "");

  const char* what() const noexcept override { return message_.c_str(); }
  const ErrorInfo& info() const noexcept { return info_; }

 private:
  ErrorInfo info_;
  std::string message_;  // composed once: "where: what (expected X, got Y). Hint: H"
};

// Quotes a value for an error message, cutting it to `max_len` characters so that a
// megabyte input line does not become a megabyte error.
std::string quote_for_error(const std::string& s, size_t max_len = 80);

}  // namespace retort
