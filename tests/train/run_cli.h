// The kill-and-resume tests' way of running `retort SUBCOMMAND CONFIG`: the config written
// next to the run folder, the executable started as its own process and, when asked, killed
// with SIGKILL as soon as a given file (a checkpoint's trainer_state.json) exists.
#pragma once

#include <signal.h>    // defines: kill, SIGKILL
#include <spawn.h>     // defines: posix_spawn
#include <sys/wait.h>  // defines: waitpid
#include <unistd.h>    // defines: usleep, environ

#include <filesystem>  // defines: std::filesystem::exists, std::filesystem::remove_all
#include <functional>  // defines: std::function
#include <fstream>     // defines: std::ofstream
#include <string>      // defines: std::string

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>  // defines: nlohmann::json

// Runs `bin subcommand RUN_DIR.json` with `cfg` written to RUN_DIR.json; returns the wait
// status. With `kill_when` not empty, the process is killed once that path exists (polled
// every 10 ms for at most a minute).
inline int run_cli_config(const std::string& bin, const char* subcommand, const nlohmann::json& cfg, const std::string& run_dir,
                          const std::string& kill_when = "") {
  std::string cfg_path = run_dir + ".json";
  std::ofstream(cfg_path) << cfg.dump(2);
  const char* argv[] = {bin.c_str(), subcommand, cfg_path.c_str(), nullptr};
  pid_t pid;
  REQUIRE(posix_spawn(&pid, bin.c_str(), nullptr, nullptr, const_cast<char* const*>(argv), environ) == 0);
  if (!kill_when.empty()) {
    for (int i = 0; i < 6000 && !std::filesystem::exists(kill_when); ++i) usleep(10000);
    ::kill(pid, SIGKILL);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return status;
}

// The two runs a kill-and-resume test compares, in fresh folders: `run(a, false)` to the end
// (exit status 0) and `run(b, true)`, killed by a signal.
inline void run_uninterrupted_and_killed(const std::function<int(const std::string& run_dir, bool kill)>& run,
                                         const std::string& a, const std::string& b) {
  std::filesystem::remove_all(a);
  std::filesystem::remove_all(b);
  CHECK(run(a, false) == 0);
  int killed = run(b, true);
  CHECK(WIFSIGNALED(killed));
}
