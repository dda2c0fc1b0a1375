// Sandbox throughput: a trivial Python program (print a number) through the executor pool,
// next to the same program started bare (/usr/bin/python3 -c ..., spawned and waited in a
// loop), all measured in one run on the same machine.
//
//   bench_sandbox [--jobs N] [--no-warm]
//
// Prints: bare start-up (sequential and at 1/2/4/8 concurrent), pool with full isolation
// (sequential: the per-job isolation overhead vs bare; then 1/2/4/8 workers), and the
// warm-worker pool at the same concurrencies.
#include <fcntl.h>     // defines: O_WRONLY
#include <spawn.h>     // defines: posix_spawn
#include <sys/wait.h>  // defines: waitpid

#include <chrono>   // defines: std::chrono
#include <cstdio>   // defines: printf
#include <cstring>  // defines: strcmp
#include <future>   // defines: std::future
#include <string>   // defines: std::string
#include <thread>   // defines: std::thread
#include <vector>   // defines: std::vector

#include "common/log.h"        // defines: set_log_level
#include "sandbox/executor.h"  // defines: Executor

extern char** environ;

using namespace retort::sandbox;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// The same interpreter and flags the pool uses for "python".
const char* kSource = "print(6 * 7)";

bool bare_once() {
  const char* argv[] = {"/usr/bin/python3", "-B", "-E", "-s", "-c", kSource, nullptr};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &fa, nullptr, const_cast<char**>(argv), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return false;
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

// Jobs/s of `jobs` bare starts with `conc` threads each running a sequential loop.
double bare_rate(int jobs, int conc) {
  double t0 = now();
  std::vector<std::thread> ts;
  for (int c = 0; c < conc; ++c) {
    ts.emplace_back([&, c] {
      for (int i = c; i < jobs; i += conc) {
        if (!bare_once()) fprintf(stderr, "bare python failed\n");
      }
    });
  }
  for (auto& t : ts) t.join();
  return jobs / (now() - t0);
}

// Jobs/s through a pool of `workers`; all jobs submitted at once (sequential: one at a time).
double pool_rate(int jobs, int workers, bool warm, bool sequential, int* failures) {
  ExecutorConfig cfg;
  cfg.workers = workers;
  cfg.warm_workers = warm;
  Executor ex(cfg);
  Job j;
  j.language = "python";
  j.source = kSource;
  // Warm-up: the first job of a warm pool starts its interpreter.
  for (int i = 0; i < workers; ++i) ex.submit(j).get();
  double t0 = now();
  std::vector<std::future<Result>> futs;
  for (int i = 0; i < jobs; ++i) {
    futs.push_back(ex.submit(j));
    if (sequential) futs.back().wait();
  }
  for (auto& f : futs) {
    Result r = f.get();
    if (r.status != Status::Ok || r.stdout_text != "42\n") {
      ++*failures;
      if (*failures < 3) fprintf(stderr, "job failed: %s %s %s\n", status_name(r.status), r.detail.c_str(), r.stderr_text.c_str());
    }
  }
  return jobs / (now() - t0);
}

}  // namespace

int main(int argc, char** argv) {
  int jobs = 64;
  bool warm = true;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--jobs") && i + 1 < argc) jobs = std::atoi(argv[++i]);
    else if (!strcmp(argv[i], "--no-warm")) warm = false;
  }
  retort::set_log_level(retort::LogLevel::Warn);
  int failures = 0;
  printf("sandbox benchmark: trivial python program (%s), %d jobs per row, %u cores\n", kSource, jobs,
         std::thread::hardware_concurrency());
  double bare_seq = bare_rate(jobs, 1);
  double pool_seq = pool_rate(jobs, 1, false, true, &failures);
  double warm_seq = warm ? pool_rate(jobs, 1, true, true, &failures) : 0;
  printf("\nsequential (one job at a time)          jobs/s   ms/job   vs bare\n");
  printf("  bare python3 -c (no isolation)     %9.1f %8.2f     1.00x\n", bare_seq, 1000 / bare_seq);
  printf("  pool, fresh sandbox per job        %9.1f %8.2f     %.2fx\n", pool_seq, 1000 / pool_seq, bare_seq / pool_seq);
  if (warm) printf("  pool, warm worker (fork per job)   %9.1f %8.2f     %.2fx\n", warm_seq, 1000 / warm_seq, bare_seq / warm_seq);
  printf("  isolation overhead per job (fresh sandbox): %+.2f ms\n", 1000 / pool_seq - 1000 / bare_seq);

  printf("\nthroughput, jobs/s    bare      pool(fresh)   pool(warm)\n");
  for (int c : {1, 2, 4, 8}) {
    double b = bare_rate(jobs, c);
    double p = pool_rate(jobs, c, false, false, &failures);
    double w = warm ? pool_rate(jobs, c, true, false, &failures) : 0;
    printf("  %d concurrent    %9.1f    %9.1f     %9.1f\n", c, b, p, w);
  }
  printf("\nfailed jobs: %d\n", failures);
  return failures == 0 ? 0 : 1;
}
