// vfork + exec of a confined process. See spawn.h for why vfork.
#include "sandbox/spawn.h"

#include <fcntl.h>        // defines: fcntl, F_DUPFD_CLOEXEC, O_NONBLOCK
#include <linux/filter.h> // defines: struct sock_fprog
#include <linux/seccomp.h>  // defines: SECCOMP_MODE_FILTER
#include <sys/prctl.h>    // defines: prctl, PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG
#include <sys/syscall.h>  // defines: SYS_* numbers
#include <sys/wait.h>     // defines: waitpid
#include <unistd.h>       // defines: vfork, execve, dup2, _exit

#include <algorithm>  // defines: std::max

#include <cerrno>   // defines: errno
#include <csignal>  // defines: SIGKILL
#include <cstring>  // defines: strerror

namespace retort::sandbox {

namespace {

// Everything the child touches, prepared before vfork.
struct ChildPlan {
  const char* path;
  char* const* argv;
  char* const* envp;
  const std::pair<int, int>* fds;
  size_t n_fds;
  int max_dst;
  const int* cg_fds;
  size_t n_cg;
  const std::pair<int, rlim_t>* rlimits;
  size_t n_rlimits;
  const char* chdir_to;
  int uid, gid;
  sock_fprog* seccomp;
  bool new_session;
  int err_fd;
};

enum Step : int { kCgroup = 1, kRlimit, kDup, kChdir, kNoNewPrivs, kSetGroups, kSetGid, kSetUid, kDeathSig,
                  kSeccomp, kExec, kSetsid };
const char* step_name(int s) {
  static const char* names[] = {"?", "join cgroup", "setrlimit", "fd layout", "chdir", "no_new_privs",
                                "setgroups", "setgid", "setuid", "parent-death signal", "seccomp", "execve",
                                "setsid"};
  return s > 0 && s <= kSetsid ? names[s] : "?";
}

[[noreturn]] void child_fail(const ChildPlan& p, int step) {
  int msg[2] = {step, errno};
  ssize_t ignored = write(p.err_fd, msg, sizeof msg);
  (void)ignored;
  _exit(127);
}

// Runs in the vfork child: raw system calls only, no allocation.
[[noreturn]] void child_main(const ChildPlan& p) {
  for (size_t i = 0; i < p.n_cg; ++i) {
    if (write(p.cg_fds[i], "0", 1) != 1) child_fail(p, kCgroup);
  }
  if (p.new_session && setsid() < 0) child_fail(p, kSetsid);
  // Move sources above every destination first so that dup2 never overwrites a source.
  int moved[64];
  int base = p.max_dst + 1;
  if (base < p.err_fd + 1) base = p.err_fd + 1;
  for (size_t i = 0; i < p.n_fds && i < 64; ++i) {
    moved[i] = fcntl(p.fds[i].first, F_DUPFD_CLOEXEC, base);
    if (moved[i] < 0) child_fail(p, kDup);
  }
  for (size_t i = 0; i < p.n_fds && i < 64; ++i) {
    if (dup2(moved[i], p.fds[i].second) < 0) child_fail(p, kDup);  // dup2 clears close-on-exec
  }
  // Everything else goes: fds leaked by other threads or libraries of the launcher must not
  // reach the job. err_fd and the moved copies are close-on-exec and vanish at exec.
  for (int fd = 0; fd <= p.max_dst; ++fd) {
    bool keep = false;
    for (size_t i = 0; i < p.n_fds; ++i) keep = keep || p.fds[i].second == fd;
    if (!keep && fd != p.err_fd) close(fd);
  }
  // close_range(first, ~0, CLOSE_RANGE_CLOEXEC): mark the rest close-on-exec (keeps err_fd usable).
  syscall(SYS_close_range, static_cast<unsigned>(p.max_dst + 1), ~0u, 4u /*CLOSE_RANGE_CLOEXEC*/);
  // Limits after the fd layout: the launcher's own descriptors can be numbered above a small
  // RLIMIT_NOFILE, and F_DUPFD_CLOEXEC to them would fail under it.
  for (size_t i = 0; i < p.n_rlimits; ++i) {
    struct rlimit rl = {p.rlimits[i].second, p.rlimits[i].second};
    if (setrlimit(static_cast<__rlimit_resource>(p.rlimits[i].first), &rl) != 0) child_fail(p, kRlimit);
  }
  if (p.chdir_to != nullptr && chdir(p.chdir_to) != 0) child_fail(p, kChdir);
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) child_fail(p, kNoNewPrivs);
  if (p.gid >= 0) {
    // Raw syscalls: glibc's wrappers would try to change the credentials of the parent's
    // threads too (they share our memory under vfork).
    if (syscall(SYS_setgroups, 0, nullptr) != 0) child_fail(p, kSetGroups);
    if (syscall(SYS_setresgid, p.gid, p.gid, p.gid) != 0) child_fail(p, kSetGid);
  }
  if (p.uid >= 0 && syscall(SYS_setresuid, p.uid, p.uid, p.uid) != 0) child_fail(p, kSetUid);
  // After the uid change: a credential change clears the parent-death signal.
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) child_fail(p, kDeathSig);
  if (p.seccomp != nullptr && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, p.seccomp, 0, 0) != 0) {
    child_fail(p, kSeccomp);
  }
  execve(p.path, p.argv, p.envp);
  child_fail(p, kExec);
}

}  // namespace

bool make_pipe(int fds[2], bool nonblock_read, bool nonblock_write) {
  if (pipe2(fds, O_CLOEXEC) != 0) return false;
  if (nonblock_read) fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  if (nonblock_write) fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
  return true;
}

Spawned spawn_process(const SpawnSpec& spec) {
  Spawned out;
  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.envp) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  int max_dst = 2;
  for (const auto& f : spec.fds) max_dst = std::max(max_dst, f.second);
  if (spec.fds.size() > 64) {
    out.error = "too many fds for the child (at most 64)";
    return out;
  }
  sock_fprog prog{};
  if (spec.seccomp_bpf != nullptr) {
    prog.len = static_cast<unsigned short>(spec.seccomp_bpf->size() / sizeof(sock_filter));
    prog.filter = reinterpret_cast<sock_filter*>(const_cast<char*>(spec.seccomp_bpf->data()));
  }
  int err_pipe[2];
  if (!make_pipe(err_pipe, false, false)) {
    out.error = std::string("pipe: ") + strerror(errno);
    return out;
  }
  ChildPlan plan{spec.path.c_str(), argv.data(), envp.data(), spec.fds.data(), spec.fds.size(), max_dst,
                 spec.cgroup_procs_fds.data(), spec.cgroup_procs_fds.size(), spec.rlimits.data(),
                 spec.rlimits.size(), spec.chdir.empty() ? nullptr : spec.chdir.c_str(), spec.uid, spec.gid,
                 spec.seccomp_bpf != nullptr ? &prog : nullptr, spec.new_session, err_pipe[1]};
  pid_t pid = vfork();
  if (pid == 0) child_main(plan);
  close(err_pipe[1]);
  if (pid < 0) {
    close(err_pipe[0]);
    out.error = std::string("vfork: ") + strerror(errno);
    return out;
  }
  int msg[2] = {0, 0};
  ssize_t n = read(err_pipe[0], msg, sizeof msg);
  close(err_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof msg)) {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    out.error = std::string("starting ") + spec.path + " failed at '" + step_name(msg[0]) + "': " + strerror(msg[1]);
    return out;
  }
  out.pid = pid;
  out.pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (out.pidfd >= 0) fcntl(out.pidfd, F_SETFD, FD_CLOEXEC);
  return out;
}

}  // namespace retort::sandbox
