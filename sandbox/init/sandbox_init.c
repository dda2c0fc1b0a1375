/* The sandbox's pid 1: a few hundred bytes of freestanding code that bubblewrap starts as
 * the first process of the job's pid namespace (bwrap --as-pid-1), under the job's seccomp
 * filter. It
 *   - makes itself non-dumpable, so that the job (same uid) cannot open /proc/1/mem or
 *     /proc/1/environ: the only process in the namespace that is not the job is out of reach;
 *   - starts the program, reaps every orphan (no zombies eating the pids limit),
 *   - reports the program's raw wait status on fd 9 (exit code vs. signal, exactly), then
 *     exits, which makes the kernel kill whatever is left in the namespace.
 * As pid 1 of the namespace it cannot be signalled from inside (no handlers installed).
 * No libc: static, no start-up cost, nothing the job could hook. x86-64 Linux only.
 */
typedef long i64;

static i64 sys(i64 n, i64 a, i64 b, i64 c, i64 d, i64 e) {
  i64 ret;
  register i64 r10 __asm__("r10") = d;
  register i64 r8 __asm__("r8") = e;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8) : "rcx", "r11", "memory");
  return ret;
}

enum { SYS_write = 1, SYS_close = 3, SYS_fork = 57, SYS_execve = 59, SYS_exit = 60, SYS_wait4 = 61,
       SYS_prctl = 157, SYS_exit_group = 231 };
enum { PR_SET_DUMPABLE = 4, STATUS_FD = 9, EINTR = 4 };

static i64 str_len(const char* s) {
  i64 n = 0;
  while (s[n]) ++n;
  return n;
}

__attribute__((noreturn, used)) void init_main(i64* sp) {
  i64 argc = sp[0];
  char** argv = (char**)(sp + 1);
  char** envp = argv + argc + 1;
  sys(SYS_prctl, PR_SET_DUMPABLE, 0, 0, 0, 0);
  if (argc < 2) sys(SYS_exit_group, 127, 0, 0, 0, 0);
  i64 child = sys(SYS_fork, 0, 0, 0, 0, 0);
  if (child == 0) {
    sys(SYS_close, STATUS_FD, 0, 0, 0, 0);
    sys(SYS_execve, (i64)argv[1], (i64)(argv + 1), (i64)envp, 0, 0);
    static const char msg[] = "sandbox: cannot execute ";
    sys(SYS_write, 2, (i64)msg, sizeof msg - 1, 0, 0);
    sys(SYS_write, 2, (i64)argv[1], str_len(argv[1]), 0, 0);
    sys(SYS_write, 2, (i64)"\n", 1, 0, 0);
    sys(SYS_exit, 127, 0, 0, 0, 0);
  }
  if (child < 0) sys(SYS_exit_group, 126, 0, 0, 0, 0);
  for (;;) {
    int status = 0;
    i64 pid = sys(SYS_wait4, -1, (i64)&status, 0, 0, 0);
    if (pid == -EINTR) continue;
    if (pid < 0) sys(SYS_exit_group, 125, 0, 0, 0, 0); /* no children left: cannot happen before the program */
    if (pid == child) {
      sys(SYS_write, STATUS_FD, (i64)&status, sizeof status, 0, 0);
      sys(SYS_exit_group, 0, 0, 0, 0, 0);
    }
  }
}

__asm__(
    ".text\n"
    ".global _start\n"
    "_start:\n"
    "  mov %rsp, %rdi\n"
    "  and $-16, %rsp\n"
    "  call init_main\n"
    "  hlt\n");
