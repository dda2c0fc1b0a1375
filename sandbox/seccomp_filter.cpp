// Builds the job seccomp filter with libseccomp and exports it as a BPF program.
#include "sandbox/seccomp_filter.h"

#include <fcntl.h>       // defines: O_CLOEXEC
#include <linux/sched.h> // defines: CLONE_NEW*
#include <sched.h>
#include <sys/mman.h>    // defines: memfd_create
#include <sys/socket.h>  // defines: AF_UNIX
#include <unistd.h>      // defines: read, write, lseek

#include <cerrno>   // defines: EPERM, ENOSYS
#include <mutex>    // defines: std::once_flag

#include <seccomp.h>  // defines: seccomp_init, seccomp_rule_add, seccomp_export_bpf

#include "common/error.h"  // defines: retort::Error
#include "sandbox/step.h"  // defines: memfd_with

namespace retort::sandbox {

namespace {

// Calls denied outright (EPERM).
constexpr const char* kDenied[] = {
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",          // other processes' memory
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",     // the filesystem view
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "unshare", "setns",                                                        // namespaces
    "bpf", "perf_event_open", "userfaultfd",                                   // kernel attack surface
    "keyctl", "add_key", "request_key",                                        // kernel keyrings
    "kexec_load", "kexec_file_load", "reboot",                                 // the machine
    "init_module", "finit_module", "delete_module",                            // modules
    "io_uring_setup", "io_uring_enter", "io_uring_register",                   // bypasses seccomp for sockets
    "open_by_handle_at", "name_to_handle_at",                                  // path-less file access
    "swapon", "swapoff", "acct", "quotactl", "syslog", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "personality", "lookup_dcookie", "vhangup", "iopl", "ioperm",
};

// Builds the filter; returns the exported program bytes.
std::string build() {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) throw Error("seccomp_init failed", "sandbox seccomp filter", "is libseccomp installed?");
  auto fail = [&](const std::string& what) {
    seccomp_release(ctx);
    throw Error("building the seccomp filter failed: " + what, "sandbox seccomp filter");
  };
  // Other ABIs are not in the filter: their syscall numbers mean different calls.
  if (seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) != 0) fail("bad-arch action");
  for (const char* name : kDenied) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) continue;  // not on this kernel / libseccomp: nothing to deny
    if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0) != 0) fail(name);
  }
  // Sockets: only AF_UNIX (the network namespace already has nothing but loopback; this
  // also closes loopback and netlink/packet sockets).
  if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
                       SCMP_A0(SCMP_CMP_NE, AF_UNIX)) != 0) fail("socket");
  // clone with any namespace flag; clone3 hides its flags in memory, so it reports ENOSYS
  // and glibc falls back to clone, which the rule above can inspect.
  const uint64_t ns_flags[] = {CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET,
                               CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWCGROUP, CLONE_NEWTIME};
  for (uint64_t f : ns_flags) {
    if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, f, f)) != 0) {
      fail("clone flags");
    }
  }
  if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0) != 0) fail("clone3");
  // TIOCSTI would push input into a terminal outside; bwrap --new-session also prevents it.
  if (seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                       SCMP_A1(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, 0x5412u /*TIOCSTI*/)) != 0) fail("ioctl");

  int fd = memfd_create("retort-seccomp", MFD_CLOEXEC);
  if (fd < 0) fail("memfd_create");
  if (seccomp_export_bpf(ctx, fd) != 0) {
    close(fd);
    fail("seccomp_export_bpf");
  }
  seccomp_release(ctx);
  std::string bytes;
  lseek(fd, 0, SEEK_SET);
  char buf[4096];
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0) bytes.append(buf, static_cast<size_t>(n));
  close(fd);
  if (bytes.empty()) throw Error("the exported seccomp program is empty", "sandbox seccomp filter");
  return bytes;
}

}  // namespace

const std::string& seccomp_bpf_program() {
  static std::once_flag once;
  static std::string program;
  std::call_once(once, [] { program = build(); });
  return program;
}

int seccomp_bpf_memfd() { return memfd_with(seccomp_bpf_program(), "retort-seccomp"); }

}  // namespace retort::sandbox
