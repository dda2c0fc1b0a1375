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

#include <fcntl.h>     // defines: O_WRONLY, O_CREAT, O_TRUNC
#include <spawn.h>     // defines: posix_spawn, posix_spawn_file_actions_t
#include <sys/wait.h>  // defines: waitpid, WIFEXITED, WEXITSTATUS
#include <unistd.h>    // defines: environ

#include <vector>  // defines: std::vector

// Runs `bin` with `args` (no shell), stdout to `out_path` and stderr to `out_path`.err;
// returns its exit status, -1 when it did not exit or could not start.
inline int run_to_file(const std::string& bin, std::vector<std::string> args, const std::string& out_path) {
  args.insert(args.begin(), bin);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, (out_path + ".err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, bin.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
