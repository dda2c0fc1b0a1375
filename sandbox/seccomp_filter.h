// The seccomp filter every sandboxed job runs under, compiled once to a classic BPF program.
//
// It is a deny list on top of the namespaces: the calls below either reach kernel surface
// that namespaces do not hide (bpf, keyctl, perf_event_open, io_uring, userfaultfd), or
// would let a job change its own confinement (mount, unshare/setns, new namespaces via
// clone, ptrace, module loading, kexec). Denied calls fail with EPERM instead of killing
// the process, so that a program probing its environment gets an ordinary error.
// Syscalls of other ABIs (i386 int 0x80, x32) kill the process: the filter only knows x86-64.
#pragma once

#include <string>  // defines: std::string

namespace retort::sandbox {

// The BPF program as bytes (an array of struct sock_filter), as bwrap --seccomp FD and
// prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER) take it. Built on first use; throws
// retort::Error when libseccomp fails.
const std::string& seccomp_bpf_program();

// A memfd (close-on-exec, offset 0) holding the program, for bwrap --seccomp. -1 on failure.
int seccomp_bpf_memfd();

}  // namespace retort::sandbox
