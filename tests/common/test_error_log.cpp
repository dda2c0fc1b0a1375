// Error messages, metrics lines and the progress bar's formatting.
#include <catch2/catch.hpp>

#include <fstream>

#include "common/error.h"
#include "common/log.h"
#include "common/platform.h"
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

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

TEST_CASE("this process runs with the OpenBLAS core type and ATen capability pinned for the CPU", "[unit]") {
  const std::string blas = retort::preferred_openblas_coretype(), aten = retort::preferred_aten_capability();
  const char* got_blas = std::getenv("OPENBLAS_CORETYPE");
  const char* got_aten = std::getenv("ATEN_CPU_CAPABILITY");
  if (blas.empty()) {
    SUCCEED("CPU lacks AVX2 + FMA; OpenBLAS and ATen pick their own kernels");
  } else {
    REQUIRE(got_blas != nullptr);
    REQUIRE(got_aten != nullptr);
    CHECK(aten == "avx2");
  }
  CHECK(retort::cpu_count() >= 1);
}

TEST_CASE("a failed metrics write is an error and leaves no torn line", "[unit]") {
  // /dev/full: every write fails with ENOSPC, as on a full disk.
  FILE* f = std::fopen("/dev/full", "ab");
  REQUIRE(f != nullptr);
  CHECK_THROWS_WITH(retort::append_whole_line(f, "{\"step\": 1}\n", "/dev/full"),
                    Catch::Contains("/dev/full: cannot append a line to the file") && Catch::Contains("No space left on device"));
  std::fclose(f);
  // A regular file keeps its whole lines after a failed write.
  std::string path = std::string(RETORT_BINARY_DIR) + "/append_whole_line.jsonl";
  std::remove(path.c_str());
  FILE* g = std::fopen(path.c_str(), "ab");
  retort::append_whole_line(g, "{\"step\": 1}\n", path);
  std::fclose(g);
  std::ifstream in(path);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(all == "{\"step\": 1}\n");
}

TEST_CASE("check_fits_in_memory refuses what the machine cannot hold", "[unit]") {
  const double avail = retort::available_memory_bytes();
  REQUIRE(avail > 0);
  CHECK_NOTHROW(retort::check_fits_in_memory(1e6, "a buffer", "key", ""));
  CHECK_THROWS_WITH(retort::check_fits_in_memory(avail * 2 + 1e12, "the model's weights", "model_config", "smaller"),
                    Catch::StartsWith("model_config: the model's weights would need") && Catch::Contains("more than this machine has"));
}
