// The external process verifier (see external.h).
#include "rewards/external.h"

#include <fcntl.h>         // defines: open, O_RDWR
#include <poll.h>          // defines: poll
#include <signal.h>        // defines: kill, SIGKILL
#include <sys/prctl.h>     // defines: prctl, PR_SET_PDEATHSIG
#include <sys/resource.h>  // defines: setrlimit
#include <sys/socket.h>    // defines: socketpair, send, MSG_NOSIGNAL
#include <sys/wait.h>      // defines: waitpid
#include <unistd.h>        // defines: fork, execvp, dup2

#include <atomic>              // defines: std::atomic
#include <cerrno>              // defines: errno
#include <chrono>              // defines: std::chrono
#include <cmath>               // defines: std::isfinite
#include <condition_variable>  // defines: std::condition_variable
#include <cstring>             // defines: strerror
#include <mutex>               // defines: std::mutex

#include "common/error.h"     // defines: retort::Error
#include "common/platform.h"  // defines: now_seconds

namespace retort::rewards {

void ExternalVerifierOptions::bind(retort::ConfigBinder& b) {
  b.field("command", command);
  b.field("processes", processes, retort::Range::between(1, 1024));
  b.field("timeout_s", timeout_s, retort::Range::above(0));
  b.field("startup_s", startup_s, retort::Range::at_least(0));
  b.field("memory_mb", memory_mb, retort::Range::at_least(1));
  b.field("open_files", open_files, retort::Range::at_least(3));
  b.field("file_size_kb", file_size_kb, retort::Range::at_least(0));
  b.field("max_restarts", max_restarts, retort::Range::at_least(0));
  b.field("workdir", workdir);
  b.field("quiet", quiet);
}

namespace {

// One running process and its socket (stdin and stdout of the child).
struct Proc {
  pid_t pid = -1;
  int fd = -1;
  std::string buf;  // bytes read past the last answered line
};

void kill_proc(Proc& p) {
  if (p.pid > 0) {
    ::kill(-p.pid, SIGKILL);  // the whole session/group
    ::kill(p.pid, SIGKILL);
    int status = 0;
    ::waitpid(p.pid, &status, 0);
  }
  if (p.fd >= 0) ::close(p.fd);
  p = Proc{};
}

class ExternalVerifier : public Verifier {
 public:
  explicit ExternalVerifier(const ExternalVerifierOptions& o) : opt_(o) {
    if (opt_.command.empty())
      throw Error(ErrorInfo{"the external verifier needs a command", "rewards verifier 'external': args.command",
                            "an argv list such as [\"python3\", \"verifier.py\"]", "[]", ""});
    if (opt_.processes < 1 || opt_.timeout_s <= 0)
      throw Error(ErrorInfo{"bad external verifier settings", "rewards verifier 'external': args",
                            "processes >= 1 and timeout_s > 0",
                            "processes " + std::to_string(opt_.processes) + ", timeout_s " + std::to_string(opt_.timeout_s),
                            ""});
    slots_.resize(static_cast<size_t>(opt_.processes));
    idle_.resize(static_cast<size_t>(opt_.processes), true);
  }
  ~ExternalVerifier() override {
    for (auto& p : slots_) kill_proc(p);
  }
  bool waits() const override { return true; }

  Score verify(const Sample& s) const override {
    size_t slot = acquire();
    Score sc = run_on(slot, s);
    release(slot);
    return sc;
  }

 private:
  size_t acquire() const {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] {
      for (bool b : idle_)
        if (b) return true;
      return false;
    });
    for (size_t i = 0; i < idle_.size(); ++i)
      if (idle_[i]) {
        idle_[i] = false;
        return i;
      }
    return 0;  // unreachable
  }
  void release(size_t slot) const {
    {
      std::lock_guard<std::mutex> lk(mu_);
      idle_[slot] = true;
    }
    cv_.notify_one();
  }

  // Starts a process in `p`; false with `why` on failure.
  bool start(Proc& p, std::string& why) const {
    if (restarts_.fetch_add(1) >= opt_.max_restarts + opt_.processes) {
      why = "the external verifier was restarted more than " + std::to_string(opt_.max_restarts) + " times; giving up";
      return false;
    }
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      why = std::string("socketpair: ") + std::strerror(errno);
      return false;
    }
    // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
    std::vector<char*> argv;
    for (const auto& a : opt_.command) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const char* dir = opt_.workdir.empty() ? nullptr : opt_.workdir.c_str();
    rlimit as{static_cast<rlim_t>(opt_.memory_mb) << 20, static_cast<rlim_t>(opt_.memory_mb) << 20};
    rlimit nofile{static_cast<rlim_t>(opt_.open_files), static_cast<rlim_t>(opt_.open_files)};
    rlimit fsize{static_cast<rlim_t>(opt_.file_size_kb) << 10, static_cast<rlim_t>(opt_.file_size_kb) << 10};
    rlimit core{0, 0};
    bool quiet = opt_.quiet;
    pid_t pid = ::fork();
    if (pid < 0) {
      why = std::string("fork: ") + std::strerror(errno);
      ::close(sv[0]);
      ::close(sv[1]);
      return false;
    }
    if (pid == 0) {
      ::setsid();
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::dup2(sv[1], 0);
      ::dup2(sv[1], 1);
      if (quiet) {
        int nul = ::open("/dev/null", O_WRONLY);
        if (nul >= 0) ::dup2(nul, 2);
      }
      ::setrlimit(RLIMIT_AS, &as);
      ::setrlimit(RLIMIT_NOFILE, &nofile);
      ::setrlimit(RLIMIT_FSIZE, &fsize);
      ::setrlimit(RLIMIT_CORE, &core);
      if (dir && ::chdir(dir) != 0) ::_exit(126);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(sv[1]);
    p.pid = pid;
    p.fd = sv[0];
    p.buf.clear();
    return true;
  }

  Score fail(const std::string& why, bool restarted) const {
    Score sc;
    sc.detail["error"] = why;
    if (restarted) sc.detail["process_restarted"] = true;
    return sc;
  }

  Score run_on(size_t slot, const Sample& s) const {
    Proc& p = slots_[slot];
    std::string why;
    bool fresh = p.pid <= 0;
    if (fresh && !start(p, why)) return fail(why, false);
    json req = {{"prompt", s.prompt}, {"completion", s.completion}, {"row", s.row}};
    if (s.completion_tokens >= 0) req["completion_tokens"] = s.completion_tokens;
    std::string line = req.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    double deadline = now_seconds() + opt_.timeout_s + (fresh ? opt_.startup_s : 0.0);
    // Write (MSG_NOSIGNAL: a dead process is an error value, not SIGPIPE).
    size_t off = 0;
    while (off < line.size()) {
      pollfd pf{p.fd, POLLOUT, 0};
      int left_ms = static_cast<int>((deadline - now_seconds()) * 1000);
      if (left_ms <= 0 || ::poll(&pf, 1, left_ms) <= 0) {
        kill_proc(p);
        return fail("the external verifier did not accept the sample within " + std::to_string(opt_.timeout_s) + " s",
                    true);
      }
      ssize_t w = ::send(p.fd, line.data() + off, line.size() - off, MSG_NOSIGNAL);
      if (w <= 0) {
        if (w < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        kill_proc(p);
        return fail("the external verifier exited (write failed); restarted for the next sample", true);
      }
      off += static_cast<size_t>(w);
    }
    // Read one line.
    while (p.buf.find('\n') == std::string::npos) {
      pollfd pf{p.fd, POLLIN, 0};
      int left_ms = static_cast<int>((deadline - now_seconds()) * 1000);
      if (left_ms <= 0 || ::poll(&pf, 1, left_ms) <= 0) {
        kill_proc(p);
        return fail("the external verifier timed out after " + std::to_string(opt_.timeout_s) +
                        " s on this sample: killed, restarted for the next",
                    true);
      }
      char chunk[65536];
      ssize_t r = ::read(p.fd, chunk, sizeof chunk);
      if (r <= 0) {
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        // EOF: the process is exiting. Reap it (briefly) for its status, then clear up.
        int status = 0;
        bool reaped = false;
        for (int k = 0; k < 100 && !reaped; ++k) {
          if (::waitpid(p.pid, &status, WNOHANG) == p.pid) reaped = true; else ::usleep(10000);
        }
        if (reaped) {
          ::kill(-p.pid, SIGKILL);  // leftovers of its process group
          p.pid = -1;
        }
        kill_proc(p);
        if (!reaped) status = 0;
        std::string how = !reaped ? std::string("closed its output")
                          : WIFSIGNALED(status) ? "killed by signal " + std::to_string(WTERMSIG(status))
                          : WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                              : "exited";
        return fail("the external verifier " + how + " before answering; restarted for the next sample", true);
      }
      p.buf.append(chunk, static_cast<size_t>(r));
      if (p.buf.size() > (16u << 20)) {
        kill_proc(p);
        return fail("the external verifier's answer exceeds 16 MiB", true);
      }
    }
    size_t nl = p.buf.find('\n');
    std::string answer = p.buf.substr(0, nl);
    p.buf.erase(0, nl + 1);
    json j;
    try {
      j = json::parse(answer);
    } catch (const std::exception& e) {
      kill_proc(p);  // out of step with the protocol: start over
      return fail("the external verifier answered a line that is not JSON: " + truncate_for_detail(answer, 200), true);
    }
    if (!j.is_object() || !j.contains("reward") || !(j["reward"].is_number() || j["reward"].is_null())) {
      return fail("the external verifier's answer lacks a numeric \"reward\" (or null): " + truncate_for_detail(answer, 200),
                  false);
    }
    Score sc;
    if (j["reward"].is_null()) {
      sc = Score::not_applicable("the external verifier answered null");
    } else {
      sc.reward = j["reward"].get<double>();
      if (!std::isfinite(sc.reward)) return fail("non-finite reward from the external verifier", false);
      sc.passed = j.contains("passed") && j["passed"].is_boolean() ? j["passed"].get<bool>() : sc.reward > 0;
    }
    if (j.contains("detail")) sc.detail["external"] = j["detail"];
    return sc;
  }

  ExternalVerifierOptions opt_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  mutable std::vector<bool> idle_;
  mutable std::vector<Proc> slots_;  // slot i is touched only by the thread that acquired it
  mutable std::atomic<int> restarts_{0};
};

}  // namespace

std::shared_ptr<Verifier> make_external_verifier(const ExternalVerifierOptions& opt) {
  return std::make_shared<ExternalVerifier>(opt);
}

}  // namespace retort::rewards
