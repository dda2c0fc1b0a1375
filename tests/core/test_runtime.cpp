// Torch runtime settings: threads from config, device resolution, the pinned CPU kernels.
#include <catch2/catch.hpp>

#include <algorithm>   // defines: std::count
#include <filesystem>  // defines: std::filesystem
#include <fstream>     // defines: std::ofstream
#include <string>      // defines: std::string

#include <nlohmann/json.hpp>  // defines: nlohmann::json

#include "common/error.h"
#include "common/platform.h"
#include "common/runtime.h"
#include "run_capture.h"  // defines: run_capture
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

TEST_CASE("runtime sets intra-op threads to the core count by default", "[unit]") {
  retort::RuntimeConfig cfg;
  cfg.device = "cpu";
  std::string desc = retort::apply_runtime(cfg);
  CHECK(at::get_num_threads() == retort::cpu_count());
  CHECK(desc.find("intra-op threads") != std::string::npos);
  cfg.threads = 1;
  retort::apply_runtime(cfg);
  CHECK(at::get_num_threads() == 1);
  CHECK_THROWS_AS(retort::resolve_device("tpu"), retort::Error);
}

// The kernels retort pins when the user set none (common/platform.h): a process started with
// neither variable computes exactly what one started with the portable choice written out
// does. Without the pin an AVX-512 CPU would run OpenBLAS's SkylakeX and ATen's AVX-512
// kernels, whose rounding differs (tests/bench/run --only cpu_kernels shows it).
TEST_CASE("retort pins portable CPU kernels: a run with no kernel variables equals one with Haswell + AVX2 set", "[e2e]") {
  namespace fs = std::filesystem;
  if (retort::preferred_openblas_coretype().empty()) {
    SUCCEED("this CPU lacks AVX2 + FMA: nothing is pinned");
    return;
  }
  const std::string bin = std::string(RETORT_BINARY_DIR) + "/retort";
  REQUIRE(fs::exists(bin));
  const fs::path dir = fs::path(RETORT_BINARY_DIR) / "test_runs" / "pinned_kernels";
  fs::remove_all(dir);
  fs::create_directories(dir);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(std::string(RETORT_SOURCE_DIR) + "/tests/fixtures/model/qwen2_tiny/" + f, dir / f);
  fs::copy_file(std::string(RETORT_SOURCE_DIR) + "/tests/fixtures/tokenizer/trained.tokenizer.json", dir / "tokenizer.json");
  {
    std::ofstream f(dir / "in.jsonl");
    for (int row = 0; row < 4; ++row) {
      nlohmann::json ids = nlohmann::json::array();
      for (int j = 0; j < 40; ++j) ids.push_back((row * 37 + j * 11) % 90 + 3);
      f << nlohmann::json{{"ids", ids}}.dump() << "\n";
    }
  }
  const std::string score = bin + " score --model " + dir.string() + " --threads 2 < " + (dir / "in.jsonl").string() + " 2>/dev/null";
  const std::string clean = "env -u OPENBLAS_CORETYPE -u ATEN_CPU_CAPABILITY -u RETORT_REEXECED ";
  const std::string pinned = run_capture(clean + score);
  const std::string explicit_portable = run_capture(clean + "OPENBLAS_CORETYPE=Haswell ATEN_CPU_CAPABILITY=avx2 " + score);
  REQUIRE(std::count(pinned.begin(), pinned.end(), '\n') == 4);
  CHECK(pinned == explicit_portable);
}
