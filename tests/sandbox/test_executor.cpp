// Ordinary jobs through the pool: results, exit codes, stdin/stdout, large data near the
// caps, compile errors, limits, cancellation, back-pressure.
#include <catch2/catch.hpp>

#include <chrono>  // defines: std::chrono
#include <future>  // defines: std::future
#include <string>  // defines: std::string
#include <vector>  // defines: std::vector

#include "sandbox/executor.h"  // defines: Executor, Job, Result
#include "sandbox_test_util.h"  // defines: shared_executor, py_job

using namespace retort::sandbox;

TEST_CASE("python: stdin to stdout", "[sandbox]") {
  Executor& ex = shared_executor();
  Result r = ex.submit(py_job("import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n", "1 2 3\n40\n")).get();
  INFO(r.stderr_text << r.detail);
  CHECK(r.status == Status::Ok);
  CHECK(r.exit_code == 0);
  CHECK(r.signal == 0);
  CHECK(r.stdout_text == "46\n");
  CHECK(r.wall_s > 0);
  CHECK(r.peak_memory_kb > 0);
}
