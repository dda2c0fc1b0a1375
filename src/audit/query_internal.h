// Small text helpers shared by the parts of the audit (query_*.cpp, report.cpp); not part of
// the interface in query.h.
#pragma once

#include <cstdio>       // defines: std::snprintf
#include <string>       // defines: std::string
#include <string_view>  // defines: std::string_view

namespace retort::audit::internal {

// `s` without leading and trailing white space.
inline std::string trim(std::string_view s) {
  size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string_view::npos) return "";
  size_t b = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(a, b - a + 1));
}

// One number through a printf format, e.g. fmt("%.3g", 0.5).
inline std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace retort::audit::internal
