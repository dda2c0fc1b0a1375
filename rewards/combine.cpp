// Reward composition and scheduling (see combine.h).
#include "rewards/combine.h"

#include <algorithm>           // defines: std::max
#include <chrono>              // defines: std::chrono
#include <cmath>               // defines: std::isnan
#include <condition_variable>  // defines: std::condition_variable
#include <deque>               // defines: std::deque
#include <functional>          // defines: std::function
#include <limits>              // defines: std::numeric_limits
#include <mutex>               // defines: std::mutex
#include <thread>              // defines: std::thread

#include <tbb/global_control.h>  // defines: tbb::global_control
#include <tbb/task_arena.h>  // defines: tbb::task_arena
#include <tbb/task_group.h>  // defines: tbb::task_group

#include "common/error.h"      // defines: retort::Error
#include "common/platform.h"   // defines: cpu_count
#include "rewards/plugin.h"    // defines: load_plugin
#include "sandbox/executor.h"  // defines: sandbox::Executor, ExecutorConfig

namespace retort::rewards {

void VerifierSpec::bind(retort::ConfigBinder& b) {
  b.field("name", name);
  b.field("weight", weight);
  b.field("args", args);
}

void RewardsConfig::bind(retort::ConfigBinder& b) {
  b.field("verifiers", verifiers);
  b.field("plugins", plugins);
  b.field("deadline_s", deadline_s, retort::Range::above(0));
  b.field("threads", threads, retort::Range::between(0, 4096));
  b.field("wait_threads", wait_threads, retort::Range::between(1, 4096));
  b.field("sandbox", sandbox);
}

std::vector<double> combine_rewards(const RewardTable& t) {
  std::vector<double> total(static_cast<size_t>(t.n), 0.0);
  for (int i = 0; i < t.n; ++i) {
    double acc = 0;
    for (int j = 0; j < t.k; ++j) {
      double r = t.reward(i, j);
      if (std::isnan(r)) continue;  // not applicable: neither rewards nor punishes
      acc += t.weights[static_cast<size_t>(j)] * r;
    }
    total[static_cast<size_t>(i)] = acc;
  }
  return total;
}

namespace {

// Threads that run waiting verifiers (sandbox jobs, external processes).
class WaitPool {
 public:
  explicit WaitPool(int threads) {
    for (int t = 0; t < threads; ++t) workers_.emplace_back([this] { loop(); });
  }
  // Tasks still queued are dropped (their batch has returned or is being torn down); the
  // running ones finish (each is bounded by its own timeout).
  ~WaitPool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      queue_.clear();
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  void push(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      queue_.push_back(std::move(task));
    }
    cv_.notify_one();
  }

 private:
  void loop() {
    while (true) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stop_ with nothing left
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// The shared state of one score() call. Tasks hold it by shared_ptr, so a task that answers
// after the deadline writes into a state nobody reads any more instead of freed memory.
struct BatchState {
  std::vector<ScoreInput> inputs;
  int k = 0;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Score> scores;
  std::vector<uint8_t> done;
  int remaining = 0;
};

void run_cell(const std::shared_ptr<BatchState>& st, const Verifier& v, int i, int j) {
  const ScoreInput& in = st->inputs[static_cast<size_t>(i)];
  static const json kEmpty = json::object();
  Sample s{in.prompt, in.completion, in.row ? *in.row : kEmpty, in.completion_tokens};
  Score sc;
  try {
    sc = v.verify(s);
  } catch (const std::exception& e) {
    sc = Score{};
    sc.detail["error"] = std::string("verifier threw: ") + e.what();
  }
  std::lock_guard<std::mutex> lk(st->mu);
  size_t idx = static_cast<size_t>(i) * st->k + j;
  st->scores[idx] = std::move(sc);
  st->done[idx] = 1;
  if (--st->remaining == 0) st->cv.notify_all();
}

}  // namespace

class RewardSet::Impl {
 public:
  std::vector<std::shared_ptr<Verifier>> verifiers;
  double deadline_s = 60;
  std::unique_ptr<tbb::global_control> parallelism;  // lets the arena have `threads` workers on small machines
  tbb::task_arena arena;
  tbb::task_group group;
  // The sandbox pool, made on first use.
  std::mutex executor_mu;
  std::shared_ptr<sandbox::Executor> executor;
  sandbox::ExecutorConfig sandbox_cfg;
  // Last, so it is destroyed first: its running tasks may still reach the members above.
  std::unique_ptr<WaitPool> waiters;

  ~Impl() {
    waiters.reset();
    arena.execute([&] { group.wait(); });
  }
};

RewardSet::RewardSet(const RewardsConfig& cfg, Registry registry, std::shared_ptr<sandbox::Executor> executor, bool allow_empty)
    : impl_(std::make_unique<Impl>()) {
  for (const auto& path : cfg.plugins) load_plugin(path, registry);
  if (cfg.verifiers.empty() && !allow_empty)
    throw Error(ErrorInfo{"no verifiers configured", "rewards.verifiers", "a list of {name, weight, args}", "[]",
                          "e.g. [{\"name\": \"math\", \"weight\": 1.0}]"});
  impl_->deadline_s = cfg.deadline_s;
  impl_->executor = std::move(executor);
  impl_->sandbox_cfg = cfg.sandbox;
  // No slot reserved for the calling thread: it only waits, the workers do the work. TBB
  // caps workers at cores - 1 by default, which would leave one worker on a 2-core machine.
  int threads = cfg.threads > 0 ? cfg.threads : cpu_count();
  impl_->parallelism = std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism,
                                                             static_cast<size_t>(threads) + 1);
  impl_->arena.initialize(threads, /*reserved_for_masters=*/0);
  VerifierContext ctx;
  ctx.executor = [this]() { return this->executor(); };
  bool any_wait = false;
  for (size_t j = 0; j < cfg.verifiers.size(); ++j) {
    const VerifierSpec& spec = cfg.verifiers[j];
    if (!(spec.weight == spec.weight))
      throw Error("weight of verifier '" + spec.name + "' is NaN", "rewards.verifiers[" + std::to_string(j) + "]");
    impl_->verifiers.push_back(registry.create(spec.name, spec.args, ctx));
    names_.push_back(spec.name);
    weights_.push_back(spec.weight);
    any_wait = any_wait || impl_->verifiers.back()->waits();
  }
  if (any_wait) impl_->waiters = std::make_unique<WaitPool>(std::max(1, cfg.wait_threads));
}

std::shared_ptr<sandbox::Executor> RewardSet::executor() const {
  std::lock_guard<std::mutex> lk(impl_->executor_mu);
  if (!impl_->executor) impl_->executor = std::make_shared<sandbox::Executor>(impl_->sandbox_cfg);
  return impl_->executor;
}

RewardSet::~RewardSet() = default;

RewardTable RewardSet::score(const std::vector<ScoreInput>& inputs) const {
  const int n = static_cast<int>(inputs.size());
  const int k = static_cast<int>(impl_->verifiers.size());
  auto st = std::make_shared<BatchState>();
  st->inputs = inputs;
  st->k = k;
  st->scores.resize(static_cast<size_t>(n) * k);
  st->done.assign(static_cast<size_t>(n) * k, 0);
  st->remaining = n * k;
  for (int j = 0; j < k; ++j) {
    std::shared_ptr<Verifier> v = impl_->verifiers[static_cast<size_t>(j)];
    for (int i = 0; i < n; ++i) {
      auto task = [st, v, i, j] { run_cell(st, *v, i, j); };
      if (v->waits()) {
        impl_->waiters->push(task);
      } else {
        impl_->arena.execute([&] { impl_->group.run(task); });
      }
    }
  }
  RewardTable t;
  t.n = n;
  t.k = k;
  t.names = names_;
  t.weights = weights_;
  {
    // sync point: the trainer waits here, never longer than the deadline.
    std::unique_lock<std::mutex> lk(st->mu);
    auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(impl_->deadline_s);
    st->cv.wait_until(lk, until, [&] { return st->remaining == 0; });
    t.rewards.resize(static_cast<size_t>(n) * k);
    t.passed.resize(static_cast<size_t>(n) * k);
    t.details.resize(static_cast<size_t>(n) * k);
    for (size_t c = 0; c < st->scores.size(); ++c) {
      if (st->done[c]) {
        t.rewards[c] = st->scores[c].reward;
        t.passed[c] = st->scores[c].passed;
        t.details[c] = std::move(st->scores[c].detail);
      } else {
        t.rewards[c] = 0.0;
        t.passed[c] = 0;
        t.details[c] = {{"error", "verifier '" + names_[c % static_cast<size_t>(k)] + "' did not answer within the " +
                                      std::to_string(impl_->deadline_s) + " s deadline: reward 0"},
                        {"timed_out", true}};
      }
    }
  }
  t.total = combine_rewards(t);
  return t;
}

}  // namespace retort::rewards
