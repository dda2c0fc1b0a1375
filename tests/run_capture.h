// Runs a shell command and returns what it wrote on stdout (tests and benchmarks that drive
// the retort executable or a reference implementation as a separate process).
#pragma once

#include <cstdio>  // defines: popen, pclose, fread
#include <string>  // defines: std::string

inline std::string run_capture(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}
