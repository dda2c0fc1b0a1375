// One confined process run: the unit the executor chains (compile, then run). It spawns the
// program under bubblewrap (or bare, rlimits-only), feeds stdin and drains stdout/stderr
// concurrently on Boost.Asio (no pipe deadlock whatever the sizes), enforces the wall and
// CPU deadlines and the output caps, kills the whole process tree when a limit trips, and
// reports what happened. It does not decide the Status: the executor does, from StepOutcome.
#pragma once

#include <cstdint>     // defines: int64_t
#include <functional>  // defines: std::function
#include <memory>      // defines: std::shared_ptr
#include <string>      // defines: std::string
#include <vector>      // defines: std::vector

#include <boost/asio/io_context.hpp>  // defines: boost::asio::io_context
#include <boost/asio/strand.hpp>      // defines: boost::asio::strand

#include "sandbox/executor.h"  // defines: Limits
#include "sandbox/host.h"      // defines: CgroupStats

namespace retort::sandbox {

using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;

struct SandboxFile {
  std::string name;     // plain file name inside the work dir
  std::string content;
  bool executable = false;
};

struct StepSpec {
  std::vector<std::string> argv;   // the program, as seen inside the sandbox (work dir = cwd)
  std::vector<std::string> env;    // extra environment ("K=V") on top of the scrubbed base
  std::vector<SandboxFile> files;  // placed in the fresh work dir before the program starts
  std::string stdin_data;
  Limits limits;
  int64_t stdout_cap = 0;          // bytes; 0 = limits.output_kb * 1024
  int64_t stderr_cap = 0;          // bytes; 0 = limits.output_kb * 1024
  bool full_isolation = true;      // bubblewrap + seccomp; false = rlimits-only
  int slot = 0;                    // running-job slot: picks the unprivileged uid
  std::string cgroup_name;         // unique per step ("job-17-run")
};

enum class KillReason { None, WallTime, CpuTime, Stdout, Stderr, Cancelled };

struct StepOutcome {
  bool started = false;
  std::string error;               // why it could not start (-> SandboxError)
  int exit_code = -1;              // as the program exited (bwrap's 128+N already decoded)
  int signal = 0;                  // the signal that ended the program, 0 when it exited
  KillReason killed = KillReason::None;
  double wall_s = 0, cpu_s = 0;
  int64_t peak_memory_kb = 0;
  CgroupStats cgroup;              // raw cgroup counters (oom kills, limit hit)
  bool sandbox_setup_failed = false;  // bwrap itself failed before the program ran
  std::string stdout_text, stderr_text;
};

class StepRun;

// Starts `spec` on `strand`; `done` is called once, on the strand, with the outcome.
// The returned handle can cancel (kill) the step from any thread.
std::shared_ptr<StepRun> start_step(boost::asio::io_context& io, Strand strand, StepSpec spec,
                                    std::function<void(StepOutcome)> done);
void cancel_step(const std::shared_ptr<StepRun>& step);

// The bwrap arguments every full-isolation sandbox starts with: all namespaces, unprivileged
// uid, no capabilities, scrubbed environment (base + `env`), read-only /usr, /proc, /dev, and
// size-capped tmpfs /tmp and /work. Callers append data binds, --chdir, --remount-ro /,
// --seccomp and the command.
std::vector<std::string> bwrap_common_args(int64_t workdir_bytes, const std::vector<std::string>& env);
// The embedded sandbox init (empty where it was not built).
std::string sandbox_init_bytes();
// A close-on-exec memfd holding `content` at offset 0; -1 on failure.
int memfd_with(const std::string& content, const char* name = "retort-file");

// Host-side base directory for rlimits-only work dirs (created on demand, 0711).
std::string rlimits_workdir_base();

}  // namespace retort::sandbox
