// Torch runtime settings: threads from config, device resolution, the pinned CPU kernels.
#include <catch2/catch.hpp>

#include <malloc.h>  // defines: mallinfo2

#include <algorithm>   // defines: std::count
#include <cstdlib>     // defines: std::getenv, std::malloc, std::free
#include <cstring>     // defines: std::memset
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

// glibc's mmap threshold as common/platform.h sets it, read back through mallinfo2's count of
// mmapped bytes (hblkhd). glibc's documented rule: a request at or above M_MMAP_THRESHOLD that
// the heap's free space cannot serve is mmapped; below it the heap grows. A process that has run
// other tests has free heap space of any size, so the probe runs in a fresh process (this test
// binary, the hidden test below), in an order where each request is larger than the heap's
// free space.
TEST_CASE("heap probe (run alone in a fresh process by the test below)", "[.heap_probe]") {
#if defined(__GLIBC__)
  auto mmapped_by = [](size_t bytes) {  // mmapped bytes that one live block of `bytes` adds
    const size_t before = mallinfo2().hblkhd;
    void* p = std::malloc(bytes);
    REQUIRE(p != nullptr);
    std::memset(p, 1, bytes);
    const size_t added = mallinfo2().hblkhd - before;
    std::free(p);
    return added;
  };
  {
    retort::TrainingHeapScope outer;
    CHECK(mmapped_by(2u << 20) >= (2u << 20));
    {
      retort::TrainingHeapScope inner;  // nests: leaving it keeps the outer scope's threshold
    }
    CHECK(mmapped_by(3u << 20) >= (3u << 20));
    CHECK(mmapped_by(256u << 10) == 0);
  }
  CHECK(mmapped_by(4u << 20) == 0);   // outside a training step: up to 32 MiB from the heap
  CHECK(mmapped_by(24u << 20) == 0);
  CHECK(mmapped_by(48u << 20) >= (48u << 20));
#endif
}

TEST_CASE("training steps take blocks of 1 MiB and more from mmap; outside them blocks up to 32 MiB come from the heap", "[unit]") {
#if defined(__GLIBC__)
  const std::string out = run_capture("env -u MALLOC_MMAP_THRESHOLD_ -u GLIBC_TUNABLES -u RETORT_MALLOC '" +
                                      std::filesystem::read_symlink("/proc/self/exe").string() + "' '[heap_probe]' 2>&1");
  INFO(out);
  CHECK(out.find("All tests passed (12 assertions in 1 test case)") != std::string::npos);
  // With RETORT_MALLOC=glibc retort leaves glibc's dynamic threshold alone, which has risen only
  // to the 3 MiB of the largest block freed so far: the 4 MiB request outside is mmapped.
  const std::string off = run_capture("env -u MALLOC_MMAP_THRESHOLD_ -u GLIBC_TUNABLES RETORT_MALLOC=glibc '" +
                                      std::filesystem::read_symlink("/proc/self/exe").string() + "' '[heap_probe]' 2>&1");
  INFO(off);
  CHECK(off.find("FAILED") != std::string::npos);
#else
  WARN("skipped: not glibc");
#endif
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
