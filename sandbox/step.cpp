// One confined process run. See step.h.
//
// Life of a step (all handlers run on the job's strand):
//   start: cgroup + pipes + memfds -> spawn (bwrap or the program) -> async stdin write,
//          async stdout/stderr reads, pidfd wait, wall timer, CPU poll timer
//   a limit trips: kill the whole tree (bwrap, then everything left in the cgroup)
//   the process exits: reap it, kill what is left of the tree, wait for both pipes to close
//   finish: read the cgroup counters, remove the cgroup and the work dir, call done once.
#include "sandbox/step.h"

#include <fcntl.h>         // defines: open, O_*
#include <sys/mman.h>      // defines: memfd_create
#include <sys/resource.h>  // defines: RLIMIT_*, struct rusage
#include <sys/stat.h>      // defines: mkdir, chown
#include <sys/wait.h>      // defines: wait4
#include <unistd.h>        // defines: close, unlink, rmdir

#include <array>      // defines: std::array
#include <atomic>     // defines: std::atomic
#include <cerrno>     // defines: errno
#include <chrono>     // defines: std::chrono
#include <cmath>      // defines: std::ceil
#include <csignal>    // defines: SIGKILL
#include <cstdlib>    // defines: std::atexit
#include <cstring>    // defines: strerror
#include <mutex>      // defines: std::once_flag
#include <filesystem> // defines: std::filesystem::remove_all

#include <boost/asio/bind_executor.hpp>      // defines: boost::asio::bind_executor
#include <boost/asio/posix/stream_descriptor.hpp>  // defines: boost::asio::posix::stream_descriptor
#include <boost/asio/steady_timer.hpp>       // defines: boost::asio::steady_timer
#include <boost/asio/write.hpp>              // defines: boost::asio::async_write

#include "common/platform.h"         // defines: now_seconds
#include "sandbox/seccomp_filter.h"  // defines: seccomp_bpf_memfd, seccomp_bpf_program
#include "sandbox/spawn.h"           // defines: spawn_process

namespace retort::sandbox {

namespace asio = boost::asio;

// The sandbox's pid 1 (init/sandbox_init.c), embedded by CMake; size 0 where not built.
extern const unsigned char kSandboxInit[];
extern const size_t kSandboxInitSize;

namespace {

constexpr int kStatusFd = 9;       // where sandbox_init reports the program's wait status
constexpr int kFirstFileFd = 10;   // job files are passed to bwrap from here on

std::atomic<uint64_t> g_workdir_seq{0};

bool valid_file_name(const std::string& n) {
  if (n.empty() || n == "." || n == ".." || n.size() > 255) return false;
  for (char c : n) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) return false;
  }
  return true;
}

}  // namespace

int memfd_with(const std::string& content, const char* name) {
  int fd = memfd_create(name, MFD_CLOEXEC);
  if (fd < 0) return -1;
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = write(fd, content.data() + off, content.size() - off);
    if (n <= 0) {
      close(fd);
      return -1;
    }
    off += static_cast<size_t>(n);
  }
  lseek(fd, 0, SEEK_SET);
  return fd;
}

std::vector<std::string> bwrap_common_args(int64_t workdir_bytes, const std::vector<std::string>& env) {
  std::string ws = std::to_string(workdir_bytes);
  std::vector<std::string> a = {"bwrap",
                                "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                                "--unshare-cgroup-try",
                                "--uid", "65534", "--gid", "65534", "--hostname", "sandbox",
                                "--die-with-parent", "--new-session", "--cap-drop", "ALL",
                                "--clearenv"};
  for (const auto& e : env) {
    auto eq = e.find('=');
    a.insert(a.end(), {"--setenv", e.substr(0, eq), e.substr(eq + 1)});
  }
  a.insert(a.end(), {"--setenv", "HOME", "/work", "--setenv", "TMPDIR", "/tmp",
                     "--ro-bind", "/usr", "/usr",
                     "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
                     "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
                     "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",
                     "--ro-bind-try", "/etc/alternatives", "/etc/alternatives",
                     "--proc", "/proc", "--dev", "/dev",
                     "--size", ws, "--tmpfs", "/tmp",
                     "--size", ws, "--tmpfs", "/work"});
  return a;
}

std::string sandbox_init_bytes() {
  return std::string(reinterpret_cast<const char*>(kSandboxInit), kSandboxInitSize);
}

std::string rlimits_workdir_base() {
  static const std::string base = "/tmp/retort-sandbox-" + std::to_string(getpid());
  static std::once_flag once;
  std::call_once(once, [] { std::atexit([] { rmdir(base.c_str()); }); });  // empty by then: each job removes its dir
  mkdir(base.c_str(), 0711);  // others may pass through to their own job dir, not list it
  return base;
}

// ---------------------------------------------------------------------------------------
// StepRun

class StepRun : public std::enable_shared_from_this<StepRun> {
 public:
  StepRun(asio::io_context& io, Strand strand, StepSpec spec, std::function<void(StepOutcome)> done)
      : io_(io), strand_(strand), spec_(std::move(spec)), done_(std::move(done)), in_(io), out_(io), err_(io),
        pidfd_(io), wall_timer_(io), cpu_timer_(io), eof_timer_(io) {}

  void start();
  void cancel() {
    asio::post(strand_, [self = shared_from_this()] { self->kill_tree(KillReason::Cancelled); });
  }

 private:
  void fail(const std::string& why);
  void kill_tree(KillReason reason);
  void write_stdin();
  void read_stream(asio::posix::stream_descriptor& d, std::string& sink, int64_t cap, KillReason over,
                   bool* eof_flag);
  void wait_exit();
  void on_exit();
  void arm_cpu_poll();
  void maybe_finish();
  void finish();
  void release_and_report();  // cgroup and work dir gone, then done_(outcome_): the last act of a run
  template <class F>
  auto on_strand(F&& f) {
    return asio::bind_executor(strand_, std::forward<F>(f));
  }

  asio::io_context& io_;
  Strand strand_;
  StepSpec spec_;
  std::function<void(StepOutcome)> done_;
  asio::posix::stream_descriptor in_, out_, err_, pidfd_;
  asio::steady_timer wall_timer_, cpu_timer_, eof_timer_;
  JobCgroup cgroup_;
  std::string host_workdir_;  // rlimits-only: the job's work dir on the host
  pid_t pid_ = -1;
  int status_fd_ = -1;  // read end of sandbox_init's status pipe (non-blocking), -1 without it
  double t_start_ = 0, t_exit_ = 0;
  bool exited_ = false, out_eof_ = false, err_eof_ = false, finished_ = false;
  int wait_status_ = 0;
  struct rusage rusage_ {};
  StepOutcome outcome_;
  std::array<char, 65536> out_buf_{}, err_buf_{};
};

void StepRun::fail(const std::string& why) {
  if (status_fd_ >= 0) close(status_fd_), status_fd_ = -1;
  outcome_.started = false;
  outcome_.error = why;
  finished_ = true;
  release_and_report();
}

void StepRun::release_and_report() {
  cgroup_.destroy();
  if (!host_workdir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(host_workdir_, ec);
  }
  auto done = std::move(done_);
  done(std::move(outcome_));
}

void StepRun::start() {
  const HostFacts& host = host_facts();
  const Limits& L = spec_.limits;
  for (const auto& f : spec_.files) {
    if (!valid_file_name(f.name)) return fail("invalid file name " + f.name + " (letters, digits, '.', '_', '-' only)");
  }
  // 1. The job's cgroup: the memory and pids limits of the whole tree. bwrap's own two
  //    processes live in it too, hence the small allowance on pids.
  CgroupLimits cl;
  cl.memory_bytes = L.memory_mb * 1024 * 1024;
  cl.pids = L.max_processes + (spec_.full_isolation ? 2 : 0);
  std::string cg_error;
  if (!cgroup_.create(spec_.cgroup_name, cl, &cg_error)) return fail("cgroup: " + cg_error);

  // 2. Pipes. Our ends are non-blocking (asio); the child's ends blocking, as programs expect.
  int in_p[2], out_p[2], err_p[2];
  if (!make_pipe(in_p, false, true)) return fail(std::string("pipe: ") + strerror(errno));
  if (!make_pipe(out_p, true, false) || !make_pipe(err_p, true, false)) {
    close(in_p[0]);
    close(in_p[1]);
    return fail(std::string("pipe: ") + strerror(errno));
  }
  std::vector<int> to_close = {in_p[0], out_p[1], err_p[1]};  // the child's ends, closed here after spawn

  SpawnSpec s;
  s.fds = {{in_p[0], 0}, {out_p[1], 1}, {err_p[1], 2}};
  // RLIMIT_CPU is a per-process backstop; the tree's total is enforced from the cgroup.
  rlim_t cpu = static_cast<rlim_t>(std::ceil(L.cpu_s)) + 1;
  s.rlimits = {{RLIMIT_CPU, cpu},
               {RLIMIT_FSIZE, static_cast<rlim_t>(L.file_size_kb) * 1024},
               {RLIMIT_NOFILE, static_cast<rlim_t>(std::max(L.open_files, 16))},
               {RLIMIT_CORE, 0},
               {RLIMIT_STACK, static_cast<rlim_t>(std::min<int64_t>(L.memory_mb, 256)) * 1024 * 1024}};
  if (host.cgroup_pids.empty()) {
    // No pids controller: RLIMIT_NPROC counts per uid, and each running job has its own uid.
    s.rlimits.push_back({RLIMIT_NPROC, static_cast<rlim_t>(L.max_processes + 2)});
  }
  if (host.cgroup_memory.empty()) {
    // No memory controller: the address-space limit is the only memory bound left.
    s.rlimits.push_back({RLIMIT_AS, static_cast<rlim_t>(L.memory_mb) * 1024 * 1024 * 2});
  }
  s.cgroup_procs_fds = cgroup_.open_procs_fds();
  if (host.is_root) s.uid = s.gid = static_cast<int>(kSandboxUidBase) + spec_.slot;

  std::vector<std::string> env = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "LC_ALL=C.UTF-8"};
  for (const auto& e : spec_.env) env.push_back(e);
  std::vector<int> memfds;
  if (spec_.full_isolation) {
    // 3a. bubblewrap: fresh namespaces, read-only /usr, tmpfs work dir and /tmp, seccomp.
    int sec = seccomp_bpf_memfd();
    if (sec < 0) {
      for (int fd : to_close) close(fd);
      close(in_p[1]), close(out_p[0]), close(err_p[0]);
      for (int fd : s.cgroup_procs_fds) close(fd);
      return fail("cannot create the seccomp memfd");
    }
    memfds.push_back(sec);
    s.fds.push_back({sec, 3});
    s.path = host.bwrap_path;
    s.argv = bwrap_common_args(L.workdir_kb * 1024, env);
    // Our pid 1: non-dumpable (the job cannot reach it through /proc), reaps orphans, and
    // reports the exact wait status (bwrap's own would fold a signal N into exit code 128+N).
    bool use_init = kSandboxInitSize > 0;
    if (use_init) {
      int blob = memfd_with(sandbox_init_bytes());
      int st[2];
      if (blob < 0 || !make_pipe(st, true, false)) {
        if (blob >= 0) close(blob);
        for (int m : memfds) close(m);
        for (int c : to_close) close(c);
        close(in_p[1]), close(out_p[0]), close(err_p[0]);
        for (int c : s.cgroup_procs_fds) close(c);
        return fail("cannot prepare the sandbox init");
      }
      memfds.push_back(blob);
      s.fds.push_back({blob, 4});
      status_fd_ = st[0];
      to_close.push_back(st[1]);
      s.fds.push_back({st[1], kStatusFd});
      s.argv.insert(s.argv.end(), {"--perms", "0555", "--ro-bind-data", "4", "/.sandbox-init"});
    }
    int next_fd = kFirstFileFd;
    for (const auto& f : spec_.files) {
      int fd = memfd_with(f.content);
      if (fd < 0) {
        for (int m : memfds) close(m);
        for (int c : to_close) close(c);
        close(in_p[1]), close(out_p[0]), close(err_p[0]);
        for (int c : s.cgroup_procs_fds) close(c);
        return fail("cannot create a memfd for " + f.name);
      }
      memfds.push_back(fd);
      s.fds.push_back({fd, next_fd});
      s.argv.insert(s.argv.end(), {"--perms", f.executable ? "0755" : "0644", "--file", std::to_string(next_fd),
                                   "/work/" + f.name});
      ++next_fd;
    }
    s.argv.insert(s.argv.end(), {"--chdir", "/work", "--remount-ro", "/", "--seccomp", "3"});
    if (use_init) s.argv.insert(s.argv.end(), {"--as-pid-1", "--", "/.sandbox-init"});
    else s.argv.push_back("--");
    s.argv.insert(s.argv.end(), spec_.argv.begin(), spec_.argv.end());
    // bwrap itself gets an empty-ish environment: its /proc/1/environ is visible to the job.
    s.envp = {"PATH=/usr/bin:/bin"};
  } else {
    // 3b. rlimits-only: the program runs on the host in a fresh dir, as an unprivileged uid
    //     when we are root, under the same seccomp filter; no namespaces.
    host_workdir_ = rlimits_workdir_base() + "/job-" + std::to_string(getpid()) + "-" +
                    std::to_string(g_workdir_seq.fetch_add(1));
    bool ok = mkdir(host_workdir_.c_str(), 0700) == 0 && mkdir((host_workdir_ + "/tmp").c_str(), 0700) == 0;
    for (const auto& f : spec_.files) {
      std::string p = host_workdir_ + "/" + f.name;
      int fd = open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, f.executable ? 0755 : 0644);
      ok = ok && fd >= 0 && write(fd, f.content.data(), f.content.size()) == static_cast<ssize_t>(f.content.size());
      if (fd >= 0) close(fd);
      if (host.is_root) ok = ok && chown(p.c_str(), s.uid, s.gid) == 0;
    }
    if (host.is_root) {
      ok = ok && chown(host_workdir_.c_str(), s.uid, s.gid) == 0 &&
           chown((host_workdir_ + "/tmp").c_str(), s.uid, s.gid) == 0;
    }
    if (!ok) {
      for (int c : to_close) close(c);
      close(in_p[1]), close(out_p[0]), close(err_p[0]);
      for (int c : s.cgroup_procs_fds) close(c);
      return fail("cannot prepare the work dir " + host_workdir_ + ": " + strerror(errno));
    }
    s.chdir = host_workdir_;
    env.push_back("HOME=" + host_workdir_);
    env.push_back("TMPDIR=" + host_workdir_ + "/tmp");
    s.envp = env;
    s.argv = spec_.argv;
    s.path = spec_.argv.empty() ? "" : spec_.argv[0];
    if (s.path.rfind("./", 0) == 0) s.path = host_workdir_ + "/" + s.path.substr(2);
    s.seccomp_bpf = &seccomp_bpf_program();
  }

  // 4. Spawn.
  t_start_ = now_seconds();
  Spawned sp = spawn_process(s);
  for (int fd : to_close) close(fd);
  for (int fd : memfds) close(fd);
  for (int fd : s.cgroup_procs_fds) close(fd);
  if (sp.pid < 0) {
    close(in_p[1]), close(out_p[0]), close(err_p[0]);
    return fail(sp.error);
  }
  pid_ = sp.pid;
  outcome_.started = true;
  in_.assign(in_p[1]);
  out_.assign(out_p[0]);
  err_.assign(err_p[0]);
  if (sp.pidfd >= 0) pidfd_.assign(sp.pidfd);

  // 5. Concurrent I/O, deadlines, exit.
  write_stdin();
  read_stream(out_, outcome_.stdout_text, spec_.stdout_cap > 0 ? spec_.stdout_cap : L.output_kb * 1024,
              KillReason::Stdout, &out_eof_);
  read_stream(err_, outcome_.stderr_text, spec_.stderr_cap > 0 ? spec_.stderr_cap : L.output_kb * 1024,
              KillReason::Stderr, &err_eof_);
  wall_timer_.expires_after(std::chrono::microseconds(static_cast<int64_t>(L.wall_s * 1e6)));
  wall_timer_.async_wait(on_strand([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec && !self->exited_) self->kill_tree(KillReason::WallTime);
  }));
  arm_cpu_poll();
  wait_exit();
}

void StepRun::kill_tree(KillReason reason) {
  if (finished_) return;
  // Output over the cap is a verdict on the bytes, whenever the reader gets to them: a program
  // that wrote them and exited first exceeded the cap all the same. A timer that fires after
  // the exit kills nothing and says nothing.
  const bool output = reason == KillReason::Stdout || reason == KillReason::Stderr;
  if (outcome_.killed == KillReason::None && (!exited_ || output)) outcome_.killed = reason;
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGKILL);  // bwrap: its pid namespace dies with it (--die-with-parent), or the bare program
    if (!cgroup_.active()) kill(-pid_, SIGKILL);  // rlimits-only without cgroups: its process group
  }
  // Whatever else is in the cgroup (a grandchild that left the process group, a fork racing
  // the kill) goes too.
  cgroup_.kill_all(2.0);
}

void StepRun::write_stdin() {
  if (spec_.stdin_data.empty()) {
    in_.close();
    return;
  }
  asio::async_write(in_, asio::buffer(spec_.stdin_data),
                    on_strand([self = shared_from_this()](const boost::system::error_code&, size_t) {
                      // EPIPE (the program stopped reading) is not an error of the job.
                      boost::system::error_code ignored;
                      self->in_.close(ignored);
                    }));
}

void StepRun::read_stream(asio::posix::stream_descriptor& d, std::string& sink, int64_t cap, KillReason over,
                          bool* eof_flag) {
  auto& buf = (&d == &out_) ? out_buf_ : err_buf_;
  d.async_read_some(asio::buffer(buf), on_strand([self = shared_from_this(), &d, &sink, &buf, cap, over, eof_flag](
                                                     const boost::system::error_code& ec, size_t n) {
    if (ec) {
      *eof_flag = true;
      boost::system::error_code ignored;
      d.close(ignored);
      self->maybe_finish();
      return;
    }
    // hot loop: appends only, the string grows geometrically up to the cap
    int64_t room = cap - static_cast<int64_t>(sink.size());
    if (static_cast<int64_t>(n) > room) {
      sink.append(buf.data(), static_cast<size_t>(std::max<int64_t>(room, 0)));
      self->kill_tree(over);
      // Keep draining (and discarding) so the tree's last writes cannot block it before the kill lands.
    } else {
      sink.append(buf.data(), n);
    }
    self->read_stream(d, sink, cap, over, eof_flag);
  }));
}

void StepRun::wait_exit() {
  if (pidfd_.is_open()) {
    pidfd_.async_wait(asio::posix::stream_descriptor::wait_read,
                      on_strand([self = shared_from_this()](const boost::system::error_code&) { self->on_exit(); }));
    return;
  }
  // No pidfd (old kernel): poll.
  eof_timer_.expires_after(std::chrono::milliseconds(5));
  eof_timer_.async_wait(on_strand([self = shared_from_this()](const boost::system::error_code&) {
    int st;
    pid_t r = waitpid(self->pid_, &st, WNOHANG | __WNOTHREAD);
    if (r == 0) return self->wait_exit();
    self->on_exit();
  }));
}

void StepRun::on_exit() {
  int st = 0;
  pid_t r;
  while ((r = wait4(pid_, &st, 0, &rusage_)) < 0 && errno == EINTR) {
  }
  t_exit_ = now_seconds();
  if (r == pid_) wait_status_ = st;
  exited_ = true;
  wall_timer_.cancel();
  cpu_timer_.cancel();
  // The program's tree must not outlive it: pid namespace teardown already killed it under
  // bwrap; the cgroup sweep catches the rest (and everything in rlimits-only mode).
  if (!cgroup_.active()) kill(-pid_, SIGKILL);
  cgroup_.kill_all(2.0);
  // Both pipes close once every holder is dead; a descriptor passed to a process outside the
  // tree is not possible, but do not wait forever on it.
  eof_timer_.expires_after(std::chrono::seconds(2));
  eof_timer_.async_wait(on_strand([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->finished_) return;
    boost::system::error_code ignored;
    self->out_.close(ignored);
    self->err_.close(ignored);
  }));
  maybe_finish();
}

void StepRun::arm_cpu_poll() {
  if (host_facts().cgroup_cpu.empty() || !cgroup_.active()) return;  // RLIMIT_CPU remains
  cpu_timer_.expires_after(std::chrono::milliseconds(100));
  cpu_timer_.async_wait(on_strand([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->exited_) return;
    double cpu = self->cgroup_.stats().cpu_s;
    if (cpu > self->spec_.limits.cpu_s) return self->kill_tree(KillReason::CpuTime);
    self->arm_cpu_poll();
  }));
}

void StepRun::maybe_finish() {
  if (finished_ || !exited_ || !out_eof_ || !err_eof_) return;
  finish();
}

void StepRun::finish() {
  finished_ = true;
  eof_timer_.cancel();
  boost::system::error_code ignored;
  in_.close(ignored);
  pidfd_.close(ignored);
  outcome_.wall_s = t_exit_ - t_start_;
  outcome_.cgroup = cgroup_.stats();
  double rusage_cpu = rusage_.ru_utime.tv_sec + rusage_.ru_utime.tv_usec / 1e6 + rusage_.ru_stime.tv_sec +
                      rusage_.ru_stime.tv_usec / 1e6;
  outcome_.cpu_s = outcome_.cgroup.cpu_s >= 0 ? outcome_.cgroup.cpu_s : rusage_cpu;
  outcome_.peak_memory_kb = outcome_.cgroup.peak_bytes >= 0 ? outcome_.cgroup.peak_bytes / 1024 : rusage_.ru_maxrss;
  int init_status = 0;
  bool have_init_status = false;
  if (status_fd_ >= 0) {
    have_init_status = read(status_fd_, &init_status, sizeof init_status) == static_cast<ssize_t>(sizeof init_status);
    close(status_fd_);
    status_fd_ = -1;
  }
  if (have_init_status) {
    // The program's own wait status, from sandbox_init.
    outcome_.exit_code = WIFEXITED(init_status) ? WEXITSTATUS(init_status) : -1;
    outcome_.signal = WIFSIGNALED(init_status) ? WTERMSIG(init_status) : 0;
  } else if (WIFEXITED(wait_status_)) {
    outcome_.exit_code = WEXITSTATUS(wait_status_);
    // bwrap reports a program killed by signal N as exit status 128 + N.
    if (spec_.full_isolation && outcome_.exit_code > 128 && outcome_.exit_code < 128 + 65) {
      outcome_.signal = outcome_.exit_code - 128;
      outcome_.exit_code = -1;
    }
    // bwrap's own failures (a mount it could not make) say so on stderr with exit status 1.
    if (spec_.full_isolation && outcome_.exit_code == 1 && outcome_.stderr_text.rfind("bwrap: ", 0) == 0) {
      outcome_.sandbox_setup_failed = true;
    }
  } else if (WIFSIGNALED(wait_status_)) {
    outcome_.signal = WTERMSIG(wait_status_);
    outcome_.exit_code = -1;
  }
  release_and_report();
}

// ---------------------------------------------------------------------------------------

std::shared_ptr<StepRun> start_step(asio::io_context& io, Strand strand, StepSpec spec,
                                    std::function<void(StepOutcome)> done) {
  auto step = std::make_shared<StepRun>(io, strand, std::move(spec), std::move(done));
  asio::post(strand, [step] { step->start(); });
  return step;
}

void cancel_step(const std::shared_ptr<StepRun>& step) {
  if (step) step->cancel();
}

}  // namespace retort::sandbox
