// Starting one confined process: vfork + exec with the steps that must happen in the child
// between the two (join the job cgroup, rlimits, fd layout, no_new_privs, drop to an
// unprivileged uid, parent-death signal, optionally seccomp). Used for bwrap in full
// isolation and for the program itself in rlimits-only mode.
//
// vfork, not fork: the launcher may be a large process (a trainer with gigabytes mapped);
// vfork copies no page tables. The child therefore only makes raw system calls on data
// prepared here, and reports a failed step through a close-on-exec pipe.
#pragma once

#include <sys/resource.h>  // defines: rlim_t
#include <sys/types.h>     // defines: pid_t, uid_t

#include <string>   // defines: std::string
#include <utility>  // defines: std::pair
#include <vector>   // defines: std::vector

namespace retort::sandbox {

struct SpawnSpec {
  std::string path;                          // executable, absolute
  std::vector<std::string> argv;             // argv[0] included
  std::vector<std::string> envp;             // the whole environment ("K=V")
  std::vector<std::pair<int, int>> fds;      // (fd here, fd number in the child); all others are closed
  std::vector<int> cgroup_procs_fds;         // each gets "0" written (moves the child into the cgroup)
  std::vector<std::pair<int, rlim_t>> rlimits;  // (RLIMIT_*, soft = hard value)
  std::string chdir;                         // working directory; "" keeps ours
  int uid = -1, gid = -1;                    // switch to these (and no supplementary groups) when >= 0
  const std::string* seccomp_bpf = nullptr;  // install this filter just before exec (rlimits-only mode)
  bool new_session = true;                   // setsid(): own process group, no controlling terminal
};

struct Spawned {
  pid_t pid = -1;
  int pidfd = -1;     // readable when the process exits (close-on-exec); -1 when pidfd_open failed
  std::string error;  // set when pid == -1: which step failed and errno
};

Spawned spawn_process(const SpawnSpec& spec);

// Creates a pipe with both ends close-on-exec; the end named by `nonblock_read`/`nonblock_write`
// is made non-blocking. Returns false on failure.
bool make_pipe(int fds[2], bool nonblock_read, bool nonblock_write);

}  // namespace retort::sandbox
