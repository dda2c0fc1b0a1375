#include "common/error.h"

#include <utility>  // defines: std::move

namespace retort {

namespace {
std::string compose(const ErrorInfo& e) {
  std::string m;
  if (!e.where.empty()) m += e.where + ": ";
  m += e.what;
  if (!e.expected.empty() || !e.got.empty()) {
    m += " (";
    if (!e.expected.empty()) m += "expected " + e.expected;
    if (!e.expected.empty() && !e.got.empty()) m += ", ";
    if (!e.got.empty()) m += "got " + e.got;
    m += ")";
  }
  if (!m.empty() && m.back() != '.') m += ".";
  if (!e.hint.empty()) m += " Hint: " + e.hint;
  return m;
}
}  // namespace

Error::Error(ErrorInfo info) : info_(std::move(info)), message_(compose(info_)) {}

Error::Error(std::string what, std::string where, std::string hint)
    : Error(ErrorInfo{std::move(what), std::move(where), "", "", std::move(hint)}) {}

std::string quote_for_error(const std::string& s, size_t max_len) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < max_len; ++i) {
    char c = s[i];
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else out += c;
  }
  out += "'";
  if (s.size() > max_len) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

}  // namespace retort
