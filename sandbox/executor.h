// The sandboxed executor pool: runs untrusted, model-written programs (Python 3, C++, ...)
// many at a time, each contained, and answers one Result per Job.
//
// Containment, all on by default (isolation = "full"):
//   - bubblewrap namespaces (pid, mount, network with loopback only, IPC, UTS, user), read-only
//     system directories, a fresh size-capped work dir and /tmp per job, a scrubbed environment,
//     an unprivileged uid, no capabilities, no_new_privs;
//   - a seccomp filter (ptrace, mount, unshare/setns, bpf, keyctl, perf_event_open, kexec,
//     module loading and non-AF_UNIX sockets are denied);
//   - rlimits plus a cgroup per job (memory and pids for the whole process tree), and a kill of
//     the whole tree at the wall-clock deadline.
// "rlimits-only" is an explicit, logged downgrade for hosts without namespaces.
//
// This is deliberately not a general container runtime: no images, no persistent state, no
// network beyond loopback. A program's failure is a Status, never an exception; exceptions
// are for misuse of the pool (bad config, a submit after shutdown).
#pragma once

#include <cstdint>  // defines: int64_t
#include <future>   // defines: std::future
#include <iosfwd>   // defines: std::istream, std::ostream
#include <memory>   // defines: std::unique_ptr
#include <string>   // defines: std::string
#include <utility>  // defines: std::pair
#include <vector>   // defines: std::vector

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "common/config.h"  // defines: retort::ConfigBinder

namespace retort::sandbox {

// Resource limits of one job. For compiled languages the compile step has its own limits
// (see languages.h); these apply to the run.
// Every limit has a valid range (kLimitRanges in job_json.cpp):
// the config reader rejects a value outside it with an error naming the key and the range,
// and Executor::submit answers a job built in code with such a value as a SandboxError. A
// zero or negative memory cap would otherwise leave the cgroup unlimited, and 1e10 s of wall
// clock would overflow the timer into an instant time limit.
struct Limits {
  double wall_s = 10;            // wall clock from start to kill of the whole process tree
  double cpu_s = 10;             // CPU seconds of the whole tree (cgroup accounting + RLIMIT_CPU)
  int64_t memory_mb = 512;       // peak memory of the whole tree (cgroup); RLIMIT_AS is not used (breaks runtimes)
  int64_t output_kb = 1024;      // per stream (stdout, stderr); more kills the job: OutputLimit
  int max_processes = 64;        // processes + threads of the job (pids cgroup)
  int64_t file_size_kb = 16384;  // largest file the job may write (RLIMIT_FSIZE)
  int open_files = 256;          // RLIMIT_NOFILE
  int64_t workdir_kb = 65536;    // size cap of the work dir and of /tmp (each a tmpfs)
  void bind(retort::ConfigBinder& b);
  // "" when every limit is in its range; otherwise one sentence naming the first field out of
  // range, its value and the range ("memory_mb = -5 is outside [16, 1048576] MB").
  std::string out_of_range() const;
};

struct Job {
  std::string language;    // "python" | "cpp" | any entry of the language table
  std::string source;      // program text, written to the work dir under the language's file name
  std::string stdin_data;  // fed to the program's stdin, then stdin is closed
  std::vector<std::pair<std::string, std::string>> files;  // name, content, placed in the work dir
  Limits limits;
};

enum class Status { Ok, RuntimeError, CompileError, TimeLimit, MemoryLimit, OutputLimit, SandboxError };

// "ok", "runtime_error", "compile_error", "time_limit", "memory_limit", "output_limit", "sandbox_error"
const char* status_name(Status s);
// The inverse of status_name; throws retort::Error for an unknown name.
Status status_from_name(const std::string& name);

struct Result {
  Status status = Status::SandboxError;
  int exit_code = -1;          // the program's exit status when it exited, -1 when killed by a signal
  int signal = 0;              // the signal that ended it (SIGKILL for limits), 0 when it exited
  double wall_s = 0, cpu_s = 0;  // of the run step (compile time excluded); cpu_s = user + system, whole tree
  int64_t peak_memory_kb = 0;  // peak of the job's own processes (cgroup), not of the launcher
  std::string stdout_text, stderr_text;  // each cut at Limits::output_kb; for CompileError stderr holds the compiler's
  std::string detail;          // why, for SandboxError and the limit statuses ("wall clock 1.0 s exceeded")
};

nlohmann::json to_json(const Result& r);
// {"language", "source", "stdin"?, "files"?: {name: content} | [[name, content]], "limits"?: {...}}.
// Unknown keys and wrong types throw retort::Error naming `where` ("stdin:3").
Job job_from_json(const nlohmann::json& j, const std::string& where);
// Fills limits the job did not set from `defaults` (job_from_json starts from defaults when given).
Job job_from_json(const nlohmann::json& j, const std::string& where, const Limits& defaults);

struct ExecutorConfig {
  int workers = 0;            // jobs run at once; 0 = number of cores. More than cores is fine: jobs wait on I/O
  int queue_capacity = 1024;  // jobs waiting beyond the running ones; submit() blocks when full (back-pressure)
  std::string isolation = "full";  // full | rlimits-only (no namespaces, no seccomp: only for trusted code)
  bool warm_workers = false;  // python jobs fork from a pre-started, sandboxed interpreter (see warm.h)
  Limits default_limits;      // limits job_from_json starts from
  void bind(retort::ConfigBinder& b);
};

class Executor {
 public:
  // Probes the host (bubblewrap, user namespaces, cgroups) and logs what it found. Throws
  // retort::Error when isolation = "full" and something it needs is missing, naming it.
  explicit Executor(const ExecutorConfig& cfg);
  ~Executor();  // shutdown()
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues a job. Blocks while the queue is full (back-pressure). After shutdown() it throws.
  std::future<Result> submit(Job job);
  // Kills every running job and answers every queued one with SandboxError("cancelled").
  // The pool keeps serving jobs submitted afterwards.
  void cancel_all();
  // cancel_all(), then stops the workers; idempotent. Nothing the pool started survives it.
  void shutdown();

  int workers() const;               // resolved worker count
  const std::string& host_report() const;  // one line: what isolation the host offers ("bwrap 0.8.0, userns, cgroup v1 ...")

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// `retort sandbox run`: reads one Job per line (JSON) from `in`, runs them through a pool made
// from `cfg`, and writes one Result per line to `out`, in input order. Blank lines are skipped.
// A line that is not a valid Job answers a sandbox_error Result naming the line number (so the
// output stays aligned with the input) and the function goes on. Returns the number of lines
// answered with a sandbox_error for bad input.
int run_jobs_jsonl(std::istream& in, std::ostream& out, const ExecutorConfig& cfg);

}  // namespace retort::sandbox
