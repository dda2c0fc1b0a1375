// Warm workers (see warm.h).
//
// One worker per pool slot: bwrap (the same namespaces, seccomp, uid and tmpfs as a fresh
// sandbox) -> sandbox_init (pid 1) -> python3 warm_server.py. A slot runs one job at a time,
// so a worker serves one job at a time. Per job:
//   1. limits of the worker's cgroup are set for the job (job limit + the idle server's share);
//   2. the job's stdin/stdout/stderr pipes go to the server over a unix socket (SCM_RIGHTS),
//      then the job as JSON; the server resets /work, /tmp and SysV IPC, writes the files,
//      forks; the child drops into the job (rlimits, scrubbed env, own session) and runs it;
//   3. we stream I/O and enforce wall/CPU/output limits exactly as for a fresh sandbox; a
//      limit kills every process of the cgroup except the worker's own three;
//   4. the server reports the wait status; we kill any leftover of the job, wait for EOF.
// Anything unexpected (the server died, did not answer, could not clean) destroys the whole
// worker; the next job on that slot starts a new one.
#include "sandbox/warm.h"

#include <fcntl.h>       // defines: open, O_RDWR
#include <poll.h>        // defines: poll
#include <sys/socket.h>  // defines: socketpair, sendmsg, SCM_RIGHTS
#include <sys/wait.h>    // defines: waitpid, WIFEXITED
#include <unistd.h>      // defines: close

#include <array>    // defines: std::array
#include <chrono>   // defines: std::chrono
#include <cmath>    // defines: std::ceil
#include <csignal>  // defines: SIGKILL, SIGXCPU, SIGXFSZ
#include <cstring>  // defines: memcpy, strerror
#include <mutex>    // defines: std::mutex
#include <set>      // defines: std::set

#include <boost/asio/bind_executor.hpp>            // defines: boost::asio::bind_executor
#include <boost/asio/posix/stream_descriptor.hpp>  // defines: boost::asio::posix::stream_descriptor
#include <boost/asio/read_until.hpp>               // defines: boost::asio::async_read_until
#include <boost/asio/steady_timer.hpp>             // defines: boost::asio::steady_timer
#include <boost/asio/streambuf.hpp>                // defines: boost::asio::streambuf
#include <boost/asio/write.hpp>                    // defines: boost::asio::async_write

#include "common/log.h"              // defines: log_warn
#include "common/platform.h"         // defines: now_seconds
#include "sandbox/host.h"            // defines: host_facts, JobCgroup
#include "sandbox/languages.h"       // defines: find_language
#include "sandbox/seccomp_filter.h"  // defines: seccomp_bpf_memfd
#include "sandbox/spawn.h"           // defines: spawn_process

namespace retort::sandbox {

namespace asio = boost::asio;

namespace {

const char* kWarmServer =
#include "warm_server.inc"
    ;

constexpr int kSocketFd = 8;  // the server's end of the control socket, inside the sandbox

std::string fmt_s(double v) {
  char b[32];
  snprintf(b, sizeof b, "%.2f", v);
  return b;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Worker

struct WarmWorker {
  explicit WarmWorker(asio::io_context& io) : sock(io) {}
  ~WarmWorker() { destroy(); }

  // Starts the worker synchronously (the server's "ready" takes one interpreter start-up).
  bool start(int slot, int64_t workdir_kb, const std::string& cgroup_name, std::string* error);
  void destroy();
  // SIGKILLs every process in the worker's cgroup except the worker's own; true when none is left.
  bool kill_job_processes(double timeout_s = 2.0);

  asio::posix::stream_descriptor sock;
  asio::streambuf rbuf;
  JobCgroup cgroup;
  std::set<pid_t> baseline;
  pid_t pid = -1;
  int64_t workdir_kb = 0;
  int64_t idle_memory_bytes = 0;
  bool alive = false;
};

bool WarmWorker::start(int slot, int64_t wk, const std::string& cgroup_name, std::string* error) {
  const HostFacts& host = host_facts();
  workdir_kb = wk;
  std::string cg_error;
  if (!cgroup.create(cgroup_name, CgroupLimits{}, &cg_error)) {
    *error = "cgroup: " + cg_error;
    return false;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    *error = std::string("socketpair: ") + strerror(errno);
    return false;
  }
  const Language* py = find_language("python");
  std::vector<std::string> env = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "LC_ALL=C.UTF-8"};
  env.insert(env.end(), py->env.begin(), py->env.end());
  SpawnSpec s;
  s.path = host.bwrap_path;
  s.argv = bwrap_common_args(wk * 1024, env);
  int sec = seccomp_bpf_memfd();
  int init = memfd_with(sandbox_init_bytes());
  int server = memfd_with(kWarmServer);
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  auto close_all = [&] {
    for (int fd : {sec, init, server, devnull, sv[1]}) {
      if (fd >= 0) close(fd);
    }
  };
  if (sec < 0 || init < 0 || server < 0 || devnull < 0 || sandbox_init_bytes().empty()) {
    close_all();
    close(sv[0]);
    *error = "cannot prepare the warm worker's files";
    return false;
  }
  s.fds = {{devnull, 0}, {devnull, 1}, {devnull, 2}, {sec, 3}, {init, 4}, {server, 5}, {sv[1], kSocketFd}};
  s.argv.insert(s.argv.end(), {"--perms", "0555", "--ro-bind-data", "4", "/.sandbox-init",
                               "--perms", "0444", "--ro-bind-data", "5", "/.warm-server.py",
                               "--chdir", "/work", "--remount-ro", "/", "--seccomp", "3",
                               "--as-pid-1", "--", "/.sandbox-init",
                               py->run[0], "-B", "-E", "-s", "/.warm-server.py"});
  s.envp = {"PATH=/usr/bin:/bin"};
  // The server's hard limits stay high; each job's child lowers its own.
  s.rlimits = {{RLIMIT_CORE, 0}};
  s.cgroup_procs_fds = cgroup.open_procs_fds();
  if (host.is_root) s.uid = s.gid = static_cast<int>(kSandboxUidBase) + slot;
  Spawned sp = spawn_process(s);
  close_all();
  for (int fd : s.cgroup_procs_fds) close(fd);
  if (sp.pid < 0) {
    close(sv[0]);
    *error = sp.error;
    return false;
  }
  if (sp.pidfd >= 0) close(sp.pidfd);
  pid = sp.pid;
  // Wait for "ready" (blocking, bounded): poll the socket.
  pollfd pfd{sv[0], POLLIN, 0};
  std::string line;
  double deadline = now_seconds() + 30;
  while (line.find('\n') == std::string::npos && now_seconds() < deadline) {
    if (poll(&pfd, 1, 100) > 0) {
      char buf[256];
      ssize_t n = read(sv[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<size_t>(n));
    }
  }
  if (line.find("ready") == std::string::npos) {
    close(sv[0]);
    *error = "the warm worker did not start";
    destroy();
    return false;
  }
  sock.assign(sv[0]);
  for (pid_t p : cgroup.pids()) baseline.insert(p);
  CgroupStats st = cgroup.stats();
  idle_memory_bytes = std::max<int64_t>(0, st.peak_bytes);
  alive = true;
  return true;
}

void WarmWorker::destroy() {
  alive = false;
  boost::system::error_code ignored;
  sock.close(ignored);
  if (pid > 0) {
    kill(pid, SIGKILL);
    cgroup.kill_all();
    int st;
    waitpid(pid, &st, 0);
    pid = -1;
  }
  cgroup.destroy();
  baseline.clear();
}

bool WarmWorker::kill_job_processes(double timeout_s) {
  double deadline = now_seconds() + timeout_s;
  while (true) {
    bool any = false;
    for (pid_t p : cgroup.pids()) {
      if (baseline.count(p) == 0) {
        kill(p, SIGKILL);
        any = true;
      }
    }
    if (!any) return true;
    if (now_seconds() > deadline) return false;
    usleep(500);
  }
}

// ---------------------------------------------------------------------------------------
// One job in a worker

class WarmRun : public WarmLease, public std::enable_shared_from_this<WarmRun> {
 public:
  WarmRun(asio::io_context& io, Strand strand, std::shared_ptr<WarmWorker> w, Job job, std::function<void(Result)> done)
      : strand_(strand), w_(std::move(w)), job_(std::move(job)), done_(std::move(done)), in_(io), out_(io), err_(io),
        wall_timer_(io), cpu_timer_(io), guard_timer_(io) {}

  void start();
  void cancel() override {
    asio::post(strand_, [self = shared_from_this()] { self->limit(KillReason::Cancelled); });
  }

 private:
  template <class F>
  auto on_strand(F&& f) {
    return asio::bind_executor(strand_, std::forward<F>(f));
  }
  void limit(KillReason why);
  void read_stream(asio::posix::stream_descriptor& d, std::string& sink, std::array<char, 65536>& buf, KillReason over,
                   bool* eof);
  void read_report();
  void arm_cpu_poll();
  void maybe_finish();
  void finish();
  void worker_failed(const std::string& why);

  Strand strand_;
  std::shared_ptr<WarmWorker> w_;
  Job job_;
  std::function<void(Result)> done_;
  asio::posix::stream_descriptor in_, out_, err_;
  asio::steady_timer wall_timer_, cpu_timer_, guard_timer_;
  std::string payload_;
  std::array<char, 65536> out_buf_{}, err_buf_{};
  Result r_;
  KillReason killed_ = KillReason::None;
  bool reported_ = false, out_eof_ = false, err_eof_ = false, finished_ = false, worker_dead_ = false;
  int status_ = 0;
  int64_t maxrss_kb_ = 0;
  double t0_ = 0, t_end_ = 0, cpu0_ = 0;
  int64_t oom0_ = 0;
  std::string worker_error_;
};

void WarmRun::start() {
  const Limits& L = job_.limits;
  // 1. Limits of the worker's cgroup for this job.
  CgroupStats before = w_->cgroup.stats();
  cpu0_ = std::max(0.0, before.cpu_s);
  oom0_ = before.oom_kills;
  w_->cgroup.reset_peak();
  w_->cgroup.set_limits(CgroupLimits{L.memory_mb * 1024 * 1024 + w_->idle_memory_bytes,
                                     L.max_processes + static_cast<int64_t>(w_->baseline.size())});
  // 2. Pipes and the job message.
  int in_p[2], out_p[2], err_p[2];
  if (!make_pipe(in_p, false, true)) return worker_failed("pipe");
  if (!make_pipe(out_p, true, false) || !make_pipe(err_p, true, false)) {
    close(in_p[0]), close(in_p[1]);
    return worker_failed("pipe");
  }
  nlohmann::json j;
  j["source"] = job_.source;
  j["files"] = nlohmann::json::array();
  for (const auto& f : job_.files) j["files"].push_back({f.first, f.second});
  const Language* py = find_language("python");
  nlohmann::json env = {{"PATH", "/usr/bin:/bin"}, {"LANG", "C.UTF-8"}, {"LC_ALL", "C.UTF-8"}, {"HOME", "/work"},
                        {"TMPDIR", "/tmp"}, {"PWD", "/work"}};
  for (const auto& e : py->env) env[e.substr(0, e.find('='))] = e.substr(e.find('=') + 1);
  j["env"] = env;
  j["limits"] = {{"cpu", static_cast<int64_t>(std::ceil(L.cpu_s)) + 1},
                 {"fsize", L.file_size_kb * 1024},
                 {"nofile", std::max(L.open_files, 16)}};
  payload_ = j.dump();  // valid UTF-8 was checked by WarmPool::run
  uint64_t n = payload_.size();
  char header[8];
  memcpy(header, &n, 8);  // little-endian on x86-64 / aarch64
  int fds[3] = {in_p[0], out_p[1], err_p[1]};
  iovec iov{header, 8};
  char ctrl[CMSG_SPACE(sizeof fds)] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = ctrl;
  msg.msg_controllen = sizeof ctrl;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof fds);
  memcpy(CMSG_DATA(c), fds, sizeof fds);
  t0_ = now_seconds();
  ssize_t sent = sendmsg(w_->sock.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  for (int fd : fds) close(fd);  // the server holds them now
  if (sent != 8) {
    close(in_p[1]), close(out_p[0]), close(err_p[0]);
    return worker_failed("the warm worker does not accept jobs");
  }
  in_.assign(in_p[1]);
  out_.assign(out_p[0]);
  err_.assign(err_p[0]);
  asio::async_write(w_->sock, asio::buffer(payload_), on_strand([self = shared_from_this()](
                                                          const boost::system::error_code& ec, size_t) {
                      if (ec) self->worker_failed("sending the job failed");
                    }));
  // 3. I/O and limits, as for a fresh sandbox.
  if (job_.stdin_data.empty()) {
    in_.close();
  } else {
    asio::async_write(in_, asio::buffer(job_.stdin_data),
                      on_strand([self = shared_from_this()](const boost::system::error_code&, size_t) {
                        boost::system::error_code ignored;
                        self->in_.close(ignored);
                      }));
  }
  read_stream(out_, r_.stdout_text, out_buf_, KillReason::Stdout, &out_eof_);
  read_stream(err_, r_.stderr_text, err_buf_, KillReason::Stderr, &err_eof_);
  wall_timer_.expires_after(std::chrono::microseconds(static_cast<int64_t>(L.wall_s * 1e6)));
  wall_timer_.async_wait(on_strand([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec && !self->reported_) self->limit(KillReason::WallTime);
  }));
  arm_cpu_poll();
  read_report();
}

void WarmRun::limit(KillReason why) {
  if (finished_) return;
  // Output over the cap is a verdict on the bytes (see StepRun::kill_tree): it stands when the
  // server reported the job's end before the reader got to them. A late timer says nothing.
  const bool output = why == KillReason::Stdout || why == KillReason::Stderr;
  if (reported_ && !output) return;
  if (killed_ == KillReason::None) killed_ = why;
  if (reported_) return;  // the job has ended: nothing left to kill
  w_->kill_job_processes();
  // The server now reports the killed child; if it does not (it was stopped or killed by
  // the job), the worker goes.
  guard_timer_.expires_after(std::chrono::seconds(3));
  guard_timer_.async_wait(on_strand([self = shared_from_this()](const boost::system::error_code& ec) {
    if (!ec && !self->reported_ && !self->finished_) self->worker_failed("the warm worker did not report");
  }));
}

void WarmRun::read_stream(asio::posix::stream_descriptor& d, std::string& sink, std::array<char, 65536>& buf,
                          KillReason over, bool* eof) {
  int64_t cap = job_.limits.output_kb * 1024;
  d.async_read_some(asio::buffer(buf), on_strand([self = shared_from_this(), &d, &sink, &buf, cap, over, eof](
                                                     const boost::system::error_code& ec, size_t n) {
    if (ec) {
      *eof = true;
      boost::system::error_code ignored;
      d.close(ignored);
      return self->maybe_finish();
    }
    int64_t room = cap - static_cast<int64_t>(sink.size());
    if (static_cast<int64_t>(n) > room) {
      sink.append(buf.data(), static_cast<size_t>(std::max<int64_t>(room, 0)));
      self->limit(over);
    } else {
      sink.append(buf.data(), n);
    }
    self->read_stream(d, sink, buf, over, eof);
  }));
}

void WarmRun::read_report() {
  asio::async_read_until(w_->sock, w_->rbuf, '\n', on_strand([self = shared_from_this()](
                                                          const boost::system::error_code& ec, size_t n) {
    if (self->finished_) return;
    if (ec) return self->worker_failed("the warm worker died");
    std::string line(asio::buffers_begin(self->w_->rbuf.data()), asio::buffers_begin(self->w_->rbuf.data()) + n);
    self->w_->rbuf.consume(n);
    nlohmann::json rep = nlohmann::json::parse(line, nullptr, false);
    if (rep.is_discarded() || !rep.contains("status")) {
      return self->worker_failed("the warm worker answered " + line.substr(0, 200));
    }
    self->t_end_ = now_seconds();
    self->reported_ = true;
    self->status_ = rep["status"].get<int>();
    self->maxrss_kb_ = rep.value("maxrss_kb", int64_t{0});
    self->wall_timer_.cancel();
    self->cpu_timer_.cancel();
    self->guard_timer_.cancel();
    // The job's leftovers (daemonised grandchildren) die now; then the pipes reach EOF.
    if (!self->w_->kill_job_processes()) self->worker_dead_ = true;
    self->guard_timer_.expires_after(std::chrono::seconds(2));
    self->guard_timer_.async_wait(self->on_strand([self](const boost::system::error_code& e) {
      if (e || self->finished_) return;
      boost::system::error_code ignored;
      self->out_.close(ignored);
      self->err_.close(ignored);
    }));
    self->maybe_finish();
  }));
}

void WarmRun::arm_cpu_poll() {
  cpu_timer_.expires_after(std::chrono::milliseconds(100));
  cpu_timer_.async_wait(on_strand([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->reported_) return;
    double cpu = self->w_->cgroup.stats().cpu_s - self->cpu0_;
    if (cpu > self->job_.limits.cpu_s) return self->limit(KillReason::CpuTime);
    self->arm_cpu_poll();
  }));
}

void WarmRun::maybe_finish() {
  if (!finished_ && reported_ && out_eof_ && err_eof_) finish();
}

void WarmRun::worker_failed(const std::string& why) {
  if (finished_) return;
  // The job may have caused it (killed its server): its result says what happened, and the
  // worker is replaced.
  worker_error_ = why;
  worker_dead_ = true;
  w_->destroy();
  t_end_ = now_seconds();
  reported_ = true;
  status_ = SIGKILL;  // as if killed
  boost::system::error_code ignored;
  out_.close(ignored);
  err_.close(ignored);
  in_.close(ignored);
  wall_timer_.cancel();
  cpu_timer_.cancel();
  guard_timer_.cancel();
  out_eof_ = err_eof_ = true;
  finish();
}

void WarmRun::finish() {
  finished_ = true;
  guard_timer_.cancel();
  boost::system::error_code ignored;
  in_.close(ignored);
  const Limits& L = job_.limits;
  CgroupStats st = w_->alive ? w_->cgroup.stats() : CgroupStats{};
  r_.wall_s = t_end_ - t0_;
  r_.cpu_s = st.cpu_s >= 0 ? st.cpu_s - cpu0_ : 0;
  int64_t peak = st.peak_bytes >= 0 ? (st.peak_bytes - w_->idle_memory_bytes) / 1024 : 0;
  r_.peak_memory_kb = std::max(peak, maxrss_kb_);
  r_.exit_code = WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  r_.signal = WIFSIGNALED(status_) ? WTERMSIG(status_) : 0;
  bool oom = st.oom_kills > oom0_;
  if (worker_dead_ && w_->alive) w_->destroy();
  switch (killed_) {
    case KillReason::Cancelled:
      r_.status = Status::SandboxError, r_.detail = "cancelled";
      break;
    case KillReason::Stdout:
    case KillReason::Stderr:
      r_.status = Status::OutputLimit;
      r_.detail = std::string(killed_ == KillReason::Stdout ? "stdout" : "stderr") + " exceeded " +
                  std::to_string(L.output_kb) + " KB";
      break;
    case KillReason::WallTime:
      r_.status = Status::TimeLimit, r_.detail = "wall clock " + fmt_s(L.wall_s) + " s exceeded";
      break;
    case KillReason::CpuTime:
      r_.status = Status::TimeLimit, r_.detail = "CPU time " + fmt_s(L.cpu_s) + " s exceeded";
      break;
    case KillReason::None: {
      bool failed = r_.exit_code != 0 || r_.signal != 0;
      if (r_.signal == SIGXCPU) {
        r_.status = Status::TimeLimit, r_.detail = "CPU time " + fmt_s(L.cpu_s) + " s exceeded";
      } else if (oom || (failed && st.memory_limit_hit)) {
        r_.status = Status::MemoryLimit, r_.detail = "memory " + std::to_string(L.memory_mb) + " MB exceeded";
      } else if (!worker_error_.empty()) {
        r_.status = Status::RuntimeError, r_.detail = worker_error_ + " (the job ended its warm worker)";
      } else if (!failed) {
        r_.status = Status::Ok;
      } else {
        r_.status = Status::RuntimeError;
        if (r_.signal == SIGXFSZ) r_.detail = "file size limit " + std::to_string(L.file_size_kb) + " KB exceeded";
        else if (r_.signal != 0) r_.detail = "killed by signal " + std::to_string(r_.signal);
        else r_.detail = "exit status " + std::to_string(r_.exit_code);
      }
      break;
    }
  }
  auto done = std::move(done_);
  done(std::move(r_));
}

// ---------------------------------------------------------------------------------------
// Pool

class WarmPool::Impl {
 public:
  asio::io_context& io;
  bool full;
  int instance;
  std::mutex mu;
  std::vector<std::shared_ptr<WarmWorker>> workers;  // by slot
  Impl(asio::io_context& i, bool f, int slots, int inst) : io(i), full(f), instance(inst), workers(slots) {}
};

WarmPool::WarmPool(asio::io_context& io, bool full_isolation, int slots, int instance)
    : impl_(std::make_unique<Impl>(io, full_isolation, slots, instance)) {}

WarmPool::~WarmPool() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (auto& w : impl_->workers) {
    if (w) w->destroy();
  }
}

std::shared_ptr<WarmLease> WarmPool::run(const Job& job, Strand& strand, int slot, std::function<void(Result)> done) {
  // Warm workers keep full isolation or they are not used: rlimits-only pools and hosts
  // without the embedded init run every job fresh.
  if (!impl_->full || sandbox_init_bytes().empty() || slot < 0 || slot >= static_cast<int>(impl_->workers.size())) {
    return nullptr;
  }
  // Jobs share the worker's sandbox: only a memory + pids cgroup bounds one job's tree
  // (per-process rlimits cannot), so without them every job runs fresh.
  const HostFacts& host = host_facts();
  if (host.cgroup_memory.empty() || host.cgroup_pids.empty()) return nullptr;
  // Files go through JSON: names must be plain and contents valid UTF-8, else run it fresh.
  try {
    nlohmann::json probe = job.source;
    (void)probe.dump();
    for (const auto& f : job.files) {
      nlohmann::json pf = f.second;
      (void)pf.dump();
      if (f.first == "main.py" || f.first.empty() || f.first.find('/') != std::string::npos || f.first[0] == '.') {
        return nullptr;
      }
    }
  } catch (const std::exception&) {
    return nullptr;
  }
  std::shared_ptr<WarmWorker> w;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    w = impl_->workers[slot];
  }
  if (w && w->alive && w->workdir_kb != job.limits.workdir_kb) {
    w->destroy();  // its tmpfs size was fixed at start
  }
  if (!w || !w->alive) {
    w = std::make_shared<WarmWorker>(impl_->io);
    std::string error;
    std::string name = "warm-" + std::to_string(impl_->instance) + "-" + std::to_string(slot);
    if (!w->start(slot, job.limits.workdir_kb, name, &error)) {
      log_warn("sandbox: warm worker for slot " + std::to_string(slot) + " failed to start (" + error +
               "); running the job in a fresh sandbox");
      return nullptr;
    }
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->workers[slot] = w;
  }
  auto run = std::make_shared<WarmRun>(impl_->io, strand, w, job, std::move(done));
  asio::post(strand, [run] { run->start(); });
  return run;
}

}  // namespace retort::sandbox
