// What the host offers for isolation (bubblewrap, user namespaces, cgroups), probed once per
// process, and the per-job cgroup that limits and measures a job's whole process tree.
//
// cgroups: v2 where the memory and pids controllers are delegated to our own cgroup, v1
// otherwise (memory, pids and cpuacct hierarchies, each used when present). Job cgroups
// nest under the cgroup retort itself runs in, so an outer limit still applies to them.
#pragma once

#include <sys/types.h>  // defines: pid_t

#include <cstdint>  // defines: int64_t
#include <string>   // defines: std::string
#include <vector>   // defines: std::vector

namespace retort::sandbox {

enum class CgroupMode { None, V1, V2 };

struct HostFacts {
  std::string bwrap_path;        // "" when bubblewrap is not installed
  std::string bwrap_version;     // "bubblewrap 0.8.0"
  bool namespaces_ok = false;    // a probe sandbox (user, pid, net, ipc, uts, mount) ran
  std::string namespaces_error;  // why not, from the probe
  bool is_root = false;          // retort runs as uid 0: jobs switch to an unprivileged uid
  CgroupMode cgroup = CgroupMode::None;
  std::string cgroup_memory, cgroup_pids, cgroup_cpu;  // parent dirs job cgroups are made in ("" = none)
  std::string cgroup_note;       // what was found and why a mode was (not) chosen
  std::string report() const;    // one line for the log
};

// Probes on first call (runs one tiny sandbox as the probe); later calls return the same.
const HostFacts& host_facts();

// Outer uid/gid a job runs as when retort is root: kSandboxUidBase + slot (one per running
// job, so that per-uid limits and signals never cross jobs).
constexpr uid_t kSandboxUidBase = 100000;

// Limits of one cgroup (values <= 0 leave the controller's limit unset).
struct CgroupLimits {
  int64_t memory_bytes = 0;  // memory (+ swap, v1 memsw) of the whole tree
  int64_t pids = 0;          // processes + threads of the whole tree
};

// Stats read from a job cgroup.
struct CgroupStats {
  double cpu_s = -1;          // user + system of the whole tree; -1 when unknown
  int64_t peak_bytes = -1;    // peak memory; -1 when unknown
  int64_t oom_kills = 0;      // processes the kernel's OOM killer killed in the cgroup
  bool memory_limit_hit = false;  // the limit was reached at least once (failcnt / events max)
};

// One job's cgroup, created by create() and removed by destroy() (after killing anything
// still inside). Not thread-safe; owned by one job.
class JobCgroup {
 public:
  JobCgroup() = default;
  ~JobCgroup();
  JobCgroup(const JobCgroup&) = delete;
  JobCgroup& operator=(const JobCgroup&) = delete;

  // Creates the cgroup `name` under each available controller parent and applies `limits`.
  // Returns false (with `error`) when nothing could be created while cgroups were expected.
  bool create(const std::string& name, const CgroupLimits& limits, std::string* error);
  bool active() const { return !dirs_.empty(); }

  // Open, close-on-exec fds of every cgroup.procs: the child writes "0" to each before exec.
  std::vector<int> open_procs_fds() const;

  // Process ids currently in the cgroup (host pid namespace).
  std::vector<pid_t> pids() const;
  // SIGKILLs everything inside until the cgroup is empty or `timeout_s` passes; true when empty.
  bool kill_all(double timeout_s = 5.0);
  CgroupStats stats() const;
  // Changes the limits of a live cgroup (used between warm-worker jobs).
  void set_limits(const CgroupLimits& limits);
  // Resets the peak-memory counter (used between warm-worker jobs).
  void reset_peak();
  // kill_all() then removes the directories. Idempotent.
  void destroy();

 private:
  std::vector<std::string> dirs_;  // every created dir (memory, pids, cpu)
  std::string mem_dir_, pids_dir_, cpu_dir_;
  bool v2_ = false;
};

// Removes the per-process parent cgroups (at exit); the pool calls it at shutdown.
void remove_cgroup_parents();

}  // namespace retort::sandbox
