// Error messages, metrics lines and the progress bar's formatting.
#include <catch2/catch.hpp>

#include <fstream>

#include "common/error.h"
#include "common/log.h"
#include "common/platform.h"

TEST_CASE("errors compose where, what, expected, got and hint into one sentence", "[unit]") {
  retort::Error e(retort::ErrorInfo{"bad dtype", "model.safetensors", "F32, F16 or BF16", "I64", "re-save the checkpoint"});
  CHECK(std::string(e.what()) == "model.safetensors: bad dtype (expected F32, F16 or BF16, got I64). Hint: re-save the checkpoint");
  CHECK(retort::quote_for_error(std::string(200, 'x'), 10) == "'xxxxxxxxxx'... (200 bytes)");
  CHECK(retort::quote_for_error("a\nb") == "'a\\nb'");
}

TEST_CASE("metrics writer appends complete JSON lines", "[unit]") {
  std::string path = std::string(RETORT_BINARY_DIR) + "/metrics_test.jsonl";
  std::remove(path.c_str());
  {
    retort::MetricsWriter w(path);
    w.write({{"step", 1}, {"loss", 2.5}});
    w.write({{"step", 2}, {"text", "invalid utf8 \xff"}});
  }
  std::ifstream f(path);
  std::string line;
  int n = 0;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    CHECK(j["step"] == n + 1);
    ++n;
  }
  CHECK(n == 2);
  std::remove(path.c_str());
  CHECK_THROWS_AS(retort::MetricsWriter("/nonexistent/dir/m.jsonl"), retort::Error);
}

TEST_CASE("durations format compactly", "[unit]") {
  CHECK(retort::ProgressBar::format_duration(5) == "5s");
  CHECK(retort::ProgressBar::format_duration(125) == "2m05s");
  CHECK(retort::ProgressBar::format_duration(3720) == "1h02m");
  CHECK(retort::ProgressBar::format_duration(-1) == "?");
}

TEST_CASE("this process runs with an OpenBLAS core type chosen for the CPU", "[unit]") {
  std::string want = retort::preferred_openblas_coretype();
  const char* got = std::getenv("OPENBLAS_CORETYPE");
  if (want.empty()) SUCCEED("CPU has neither AVX-512F nor AVX2; OpenBLAS picks its own kernel");
  else REQUIRE(got != nullptr);
  CHECK(retort::cpu_count() >= 1);
}
