// The executor pool: a bounded queue in front of N concurrently running jobs, each a chain
// of confined steps (compile when the language needs it, then run), all driven by one
// Boost.Asio io_context. See executor.h for the guarantees.
#include "sandbox/executor.h"

#include <csignal>  // defines: signal, SIGPIPE, SIGXCPU, SIGXFSZ, SIGKILL

#include <algorithm>           // defines: std::min
#include <atomic>              // defines: std::atomic
#include <condition_variable>  // defines: std::condition_variable
#include <deque>               // defines: std::deque
#include <list>                // defines: std::list
#include <map>                 // defines: std::map
#include <mutex>               // defines: std::mutex
#include <set>                 // defines: std::set
#include <thread>              // defines: std::thread
#include <unordered_map>       // defines: std::unordered_map

#include <boost/asio/executor_work_guard.hpp>  // defines: boost::asio::executor_work_guard
#include <boost/asio/io_context.hpp>           // defines: boost::asio::io_context
#include <boost/asio/post.hpp>                 // defines: boost::asio::post

#include "common/error.h"        // defines: retort::Error
#include "common/log.h"          // defines: log_info, log_warn
#include "common/platform.h"     // defines: cpu_count
#include "sandbox/host.h"        // defines: host_facts
#include "sandbox/languages.h"   // defines: find_language
#include "sandbox/seccomp_filter.h"  // defines: seccomp_bpf_program
#include "sandbox/step.h"        // defines: start_step, StepSpec, StepOutcome
#include "sandbox/warm.h"        // defines: WarmPool

namespace retort::sandbox {

namespace asio = boost::asio;

// ---------------------------------------------------------------------------------------
// Status from a step's outcome

namespace {

std::string fmt_s(double v) {
  char b[32];
  snprintf(b, sizeof b, "%.2f", v);
  return b;
}

// Decides the Status of a run step. Order matters: a limit the pool enforced explains the
// death better than the signal it used (SIGKILL).
Result result_from(StepOutcome o, const Limits& L) {
  Result r;
  r.exit_code = o.exit_code;
  r.signal = o.signal;
  r.wall_s = o.wall_s;
  r.cpu_s = o.cpu_s;
  r.peak_memory_kb = o.peak_memory_kb;
  r.stdout_text = std::move(o.stdout_text);
  r.stderr_text = std::move(o.stderr_text);
  if (!o.started) {
    r.status = Status::SandboxError;
    r.detail = o.error;
    return r;
  }
  if (o.sandbox_setup_failed) {
    r.status = Status::SandboxError;
    r.detail = "the sandbox could not be set up: " + r.stderr_text.substr(0, r.stderr_text.find('\n'));
    return r;
  }
  switch (o.killed) {
    case KillReason::Cancelled:
      r.status = Status::SandboxError;
      r.detail = "cancelled";
      return r;
    case KillReason::Stdout:
    case KillReason::Stderr:
      r.status = Status::OutputLimit;
      r.detail = std::string(o.killed == KillReason::Stdout ? "stdout" : "stderr") + " exceeded " +
                 std::to_string(L.output_kb) + " KB";
      return r;
    case KillReason::WallTime:
      r.status = Status::TimeLimit;
      r.detail = "wall clock " + fmt_s(L.wall_s) + " s exceeded";
      return r;
    case KillReason::CpuTime:
      r.status = Status::TimeLimit;
      r.detail = "CPU time " + fmt_s(L.cpu_s) + " s exceeded";
      return r;
    case KillReason::None:
      break;
  }
  if (o.signal == SIGXCPU || (o.signal == SIGKILL && o.cpu_s > L.cpu_s)) {
    r.status = Status::TimeLimit;
    r.detail = "CPU time " + fmt_s(L.cpu_s) + " s exceeded";
    return r;
  }
  bool failed = o.exit_code != 0 || o.signal != 0;
  if (o.cgroup.oom_kills > 0 || (failed && o.cgroup.memory_limit_hit)) {
    r.status = Status::MemoryLimit;
    r.detail = "memory " + std::to_string(L.memory_mb) + " MB exceeded";
    return r;
  }
  if (!failed) {
    r.status = Status::Ok;
    return r;
  }
  r.status = Status::RuntimeError;
  if (o.signal == SIGXFSZ) r.detail = "file size limit " + std::to_string(L.file_size_kb) + " KB exceeded";
  else if (o.signal != 0) r.detail = std::string("killed by signal ") + std::to_string(o.signal) + " (" + strsignal(o.signal) + ")";
  else r.detail = "exit status " + std::to_string(o.exit_code);
  return r;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Compile cache: the code verifier runs one program against many tests, i.e. the same
// source many times; it is compiled once. Concurrent requests for one source share one
// compile. Bounded (LRU by count).

struct CompileEntry {
  bool done = false;
  bool ok = false;
  std::string artifact;     // the binary
  Result failure;           // CompileError / SandboxError when !ok
  std::vector<std::function<void()>> waiters;  // called (on any thread) when done
  uint64_t last_use = 0;
};

class CompileCache {
 public:
  static constexpr size_t kMaxEntries = 128;
  // Returns the entry and whether the caller must compile it (first requester).
  std::pair<std::shared_ptr<CompileEntry>, bool> acquire(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = map_.find(key);
    if (it != map_.end()) {
      it->second->last_use = ++clock_;
      return {it->second, false};
    }
    if (map_.size() >= kMaxEntries) evict();
    auto e = std::make_shared<CompileEntry>();
    e->last_use = ++clock_;
    map_[key] = e;
    return {e, true};
  }
  // Registers `f` to run when `e` is done; runs it now when it already is.
  void when_done(const std::shared_ptr<CompileEntry>& e, std::function<void()> f) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!e->done) {
        e->waiters.push_back(std::move(f));
        return;
      }
    }
    f();
  }
  void complete(const std::string& key, const std::shared_ptr<CompileEntry>& e, bool cacheable) {
    std::vector<std::function<void()>> waiters;
    {
      std::lock_guard<std::mutex> lock(mu_);
      e->done = true;
      waiters.swap(e->waiters);
      // A compile that was cancelled or hit a sandbox failure is not the source's fault: forget it.
      if (!cacheable) {
        auto it = map_.find(key);
        if (it != map_.end() && it->second == e) map_.erase(it);
      }
    }
    for (auto& w : waiters) w();
  }

 private:
  void evict() {
    auto victim = map_.end();
    for (auto it = map_.begin(); it != map_.end(); ++it) {
      if (!it->second->done) continue;
      if (victim == map_.end() || it->second->last_use < victim->second->last_use) victim = it;
    }
    if (victim != map_.end()) map_.erase(victim);
  }
  std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<CompileEntry>> map_;
  uint64_t clock_ = 0;
};

// ---------------------------------------------------------------------------------------
// Impl

struct JobState {
  Job job;
  std::promise<Result> promise;
  bool answered = false;
  int slot = -1;
  uint64_t id = 0;
  std::unique_ptr<Strand> strand;
  std::shared_ptr<StepRun> step;           // the step running now (for cancel)
  std::shared_ptr<WarmLease> warm;         // the warm worker running it (for cancel)
  bool cancelled = false;
};

class Executor::Impl {
 public:
  explicit Impl(const ExecutorConfig& cfg);
  std::future<Result> submit(Job job);
  void cancel_all();
  void shutdown();

  ExecutorConfig cfg_;
  int workers_ = 1;
  bool full_ = true;
  std::string report_;

 private:
  void dispatch_locked();  // starts queued jobs while slots are free; mu_ held
  void start_job(const std::shared_ptr<JobState>& js);
  void run_step(const std::shared_ptr<JobState>& js, const Language& lang, const std::string* artifact);
  void compile_then_run(const std::shared_ptr<JobState>& js, const Language& lang);
  void answer(const std::shared_ptr<JobState>& js, Result r);  // on the job's strand

  asio::io_context io_;
  std::unique_ptr<asio::executor_work_guard<asio::io_context::executor_type>> guard_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;  // queue space, and "no job running" for shutdown
  std::deque<std::shared_ptr<JobState>> queue_;
  std::set<std::shared_ptr<JobState>> running_;
  std::vector<int> free_slots_;
  bool stopped_ = false;
  uint64_t next_id_ = 0;
  CompileCache compile_cache_;
  std::unique_ptr<WarmPool> warm_;
  static std::atomic<int> instance_counter_;
  int instance_ = 0;
};

std::atomic<int> Executor::Impl::instance_counter_{0};

Executor::Impl::Impl(const ExecutorConfig& cfg) : cfg_(cfg) {
  if (cfg.queue_capacity < 1) {
    throw Error(ErrorInfo{"sandbox.queue_capacity must be at least 1", "sandbox config", ">= 1",
                          std::to_string(cfg.queue_capacity), ""});
  }
  if (cfg.workers < 0) {
    throw Error(ErrorInfo{"sandbox.workers must be >= 0 (0 = one per core)", "sandbox config", ">= 0",
                          std::to_string(cfg.workers), ""});
  }
  workers_ = cfg.workers > 0 ? cfg.workers : cpu_count();
  full_ = cfg.isolation != "rlimits-only";
  if (cfg.isolation != "full" && cfg.isolation != "rlimits-only") {
    throw Error(ErrorInfo{"unknown sandbox.isolation", "sandbox config", "full | rlimits-only", cfg.isolation, ""});
  }
  const HostFacts& host = host_facts();
  static std::once_flag logged;
  std::call_once(logged, [&] { log_info("sandbox host: " + host.report()); });
  if (full_ && !host.namespaces_ok) {
    throw Error(ErrorInfo{"the sandbox cannot isolate untrusted code on this host", "sandbox.isolation = \"full\"",
                          "bubblewrap with user, pid, network, IPC, UTS and mount namespaces",
                          host.namespaces_error,
                          "install bubblewrap (apt-get install bubblewrap) and allow user namespaces "
                          "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces > 0); "
                          "only for trusted code: sandbox.isolation = \"rlimits-only\""});
  }
  if (!full_) {
    log_warn("sandbox: isolation = \"rlimits-only\": jobs run WITHOUT namespaces (they can see the host's files "
             "and network); use only for trusted code");
  }
  seccomp_bpf_program();  // build now: a libseccomp failure is a start-up error, not a job error
  report_ = host.report();
  instance_ = instance_counter_.fetch_add(1);
  for (int i = workers_ - 1; i >= 0; --i) free_slots_.push_back(i);
  // Handlers are short (spawn, copy a buffer, read a counter); a few threads keep up with many jobs.
  int threads = std::max(1, std::min(workers_, 4));
  guard_ = std::make_unique<asio::executor_work_guard<asio::io_context::executor_type>>(io_.get_executor());
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { io_.run(); });
  if (cfg.warm_workers) warm_ = std::make_unique<WarmPool>(io_, full_, workers_, instance_);
}

std::future<Result> Executor::Impl::submit(Job job) {
  // Limits built in code skip the config reader's range check: a job with one out of range
  // is answered at once, never run without its cap.
  if (std::string bad = job.limits.out_of_range(); !bad.empty()) {
    std::promise<Result> p;
    Result r;
    r.detail = "the job's " + bad + "; no job was run";
    p.set_value(std::move(r));
    return p.get_future();
  }
  auto js = std::make_shared<JobState>();
  js->job = std::move(job);
  js->strand = std::make_unique<Strand>(asio::make_strand(io_));
  auto fut = js->promise.get_future();
  std::unique_lock<std::mutex> lock(mu_);
  // Back-pressure: the queue holds at most queue_capacity jobs beyond the running ones.
  cv_.wait(lock, [&] { return stopped_ || static_cast<int>(queue_.size()) < cfg_.queue_capacity; });
  if (stopped_) {
    throw Error("submit() after shutdown()", "sandbox executor", "create a new Executor");
  }
  js->id = next_id_++;
  queue_.push_back(js);
  dispatch_locked();
  return fut;
}

void Executor::Impl::dispatch_locked() {
  while (!free_slots_.empty() && !queue_.empty()) {
    auto js = queue_.front();
    queue_.pop_front();
    js->slot = free_slots_.back();
    free_slots_.pop_back();
    running_.insert(js);
    asio::post(*js->strand, [this, js] { start_job(js); });
  }
  cv_.notify_all();
}

void Executor::Impl::answer(const std::shared_ptr<JobState>& js, Result r) {
  if (js->answered) return;
  js->answered = true;
  js->step.reset();
  js->warm.reset();
  {
    std::lock_guard<std::mutex> lock(mu_);
    running_.erase(js);
    free_slots_.push_back(js->slot);
    dispatch_locked();
  }
  js->promise.set_value(std::move(r));  // after releasing the slot: a waiter may submit at once
}

void Executor::Impl::start_job(const std::shared_ptr<JobState>& js) {
  if (js->cancelled) return answer(js, Result{Status::SandboxError, -1, 0, 0, 0, 0, "", "", "cancelled"});
  const Language* lang = find_language(js->job.language);
  if (lang == nullptr) {
    Result r;
    r.detail = "unknown language '" + js->job.language + "' (known: " + language_names() + ")";
    return answer(js, std::move(r));
  }
  if (!lang->compile.empty()) return compile_then_run(js, *lang);
  if (warm_ && lang->warm_capable) {
    auto self = js;
    js->warm = warm_->run(js->job, *js->strand, js->slot, [this, self](Result r) { answer(self, std::move(r)); });
    if (js->warm) return;  // otherwise no warm worker could serve it: run it fresh
  }
  run_step(js, *lang, nullptr);
}

void Executor::Impl::compile_then_run(const std::shared_ptr<JobState>& js, const Language& lang) {
  std::string key = lang.name + '\n' + js->job.source;
  auto [entry, mine] = compile_cache_.acquire(key);
  auto continue_job = [this, js, entry, &lang] {
    asio::post(*js->strand, [this, js, entry, &lang] {
      if (js->cancelled) return answer(js, Result{Status::SandboxError, -1, 0, 0, 0, 0, "", "", "cancelled"});
      if (!entry->ok) return answer(js, entry->failure);
      run_step(js, lang, &entry->artifact);
    });
  };
  if (!mine) return compile_cache_.when_done(entry, continue_job);

  // The compiler runs in the same sandbox as programs do (a source can #include any file
  // the compiler can read). The binary comes back on stdout: the work dir dies with the
  // sandbox, and the run step gets a fresh one.
  StepSpec s;
  s.argv = {"/bin/sh", "-c", "\"$@\" >&2 && exec cat -- " + lang.artifact, "sh"};
  s.argv.insert(s.argv.end(), lang.compile.begin(), lang.compile.end());
  s.env = lang.env;
  s.files.push_back({lang.source_file, js->job.source, false});
  s.limits = lang.compile_limits;
  s.stdout_cap = 64 << 20;  // the artifact
  s.full_isolation = full_;
  s.slot = js->slot;
  s.cgroup_name = "job-" + std::to_string(instance_) + "-" + std::to_string(js->id) + "-compile";
  js->step = start_step(io_, *js->strand, std::move(s), [this, js, key, entry, continue_job](StepOutcome o) {
    bool cacheable = o.started && !o.sandbox_setup_failed && o.killed != KillReason::Cancelled;
    if (cacheable && o.killed == KillReason::None && o.exit_code == 0 && o.signal == 0) {
      entry->ok = true;
      entry->artifact = std::move(o.stdout_text);
    } else {
      Limits cl = find_language(js->job.language)->compile_limits;
      Result r = result_from(std::move(o), cl);
      if (r.status != Status::SandboxError) {
        r.detail = "compilation failed" + (r.detail.empty() ? std::string() : ": " + r.detail);
        r.status = Status::CompileError;
        r.stdout_text.clear();  // partial binary, if any
      }
      entry->failure = std::move(r);
    }
    compile_cache_.complete(key, entry, cacheable);
    continue_job();
  });
}

void Executor::Impl::run_step(const std::shared_ptr<JobState>& js, const Language& lang, const std::string* artifact) {
  StepSpec s;
  s.argv = lang.run;
  s.env = lang.env;
  if (artifact != nullptr) s.files.push_back({lang.artifact, *artifact, true});
  else s.files.push_back({lang.source_file, js->job.source, false});
  for (const auto& f : js->job.files) {
    if (f.first == s.files.front().name) {
      Result r;
      r.detail = "job file '" + f.first + "' would replace the program itself";
      return answer(js, std::move(r));
    }
    s.files.push_back({f.first, f.second, false});
  }
  s.stdin_data = std::move(js->job.stdin_data);
  s.limits = js->job.limits;
  s.full_isolation = full_;
  s.slot = js->slot;
  s.cgroup_name = "job-" + std::to_string(instance_) + "-" + std::to_string(js->id) + "-run";
  Limits L = js->job.limits;
  js->step = start_step(io_, *js->strand, std::move(s),
                        [this, js, L](StepOutcome o) { answer(js, result_from(std::move(o), L)); });
}

void Executor::Impl::cancel_all() {
  std::deque<std::shared_ptr<JobState>> queued;
  std::vector<std::shared_ptr<JobState>> running;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queued.swap(queue_);
    running.assign(running_.begin(), running_.end());
    cv_.notify_all();
  }
  for (auto& js : queued) {
    Result r;
    r.detail = "cancelled";
    js->answered = true;
    js->promise.set_value(std::move(r));
  }
  for (auto& js : running) {
    asio::post(*js->strand, [js] {
      js->cancelled = true;
      cancel_step(js->step);
      if (js->warm) js->warm->cancel();
    });
  }
}

void Executor::Impl::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_ && threads_.empty()) return;
    stopped_ = true;
  }
  cancel_all();
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return running_.empty(); });
  }
  warm_.reset();  // kills the warm workers (their handlers run on io_, still alive here)
  guard_.reset();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

// ---------------------------------------------------------------------------------------
// Executor

Executor::Executor(const ExecutorConfig& cfg) : impl_(std::make_unique<Impl>(cfg)) {
  // A job that stops reading its stdin must not kill the launcher with SIGPIPE.
  struct sigaction sa {};
  sigaction(SIGPIPE, nullptr, &sa);
  if (sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
}
Executor::~Executor() { shutdown(); }
std::future<Result> Executor::submit(Job job) { return impl_->submit(std::move(job)); }
void Executor::cancel_all() { impl_->cancel_all(); }
void Executor::shutdown() { impl_->shutdown(); }
int Executor::workers() const { return impl_->workers_; }
const std::string& Executor::host_report() const { return impl_->report_; }

}  // namespace retort::sandbox
