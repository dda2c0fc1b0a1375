// The ladder of the build (docs/architecture.md section 2), checked on the sources: a file may
// include its own rung and the rungs below it, never one above. The CMake libraries mirror the
// rungs (each links only what is below it), so an upward include is a link the build does not
// have, or a cycle waiting to happen.
//
//   0 base     src/common (error, config, log, platform, run_dir, hash)
//   1 sandbox  sandbox/
//   2 rewards  rewards/
//   3 text     src/tokenizer, src/data
//   4 audit    src/audit
//   5 core     src/model, src/rollout, src/train, src/dist, src/common/runtime.*, src/common/torch_pch.h,
//              and Torch's own headers (<torch/...>, <ATen/...>, <c10/...>)
//   6 exe      src/cli
#include <catch2/catch.hpp>

#include <unistd.h>  // defines: getpid

#include <filesystem>  // defines: std::filesystem
#include <fstream>     // defines: std::ifstream
#include <regex>       // defines: std::regex
#include <string>      // defines: std::string
#include <vector>      // defines: std::vector
#include "test_paths.h"  // defines: RETORT_SOURCE_DIR, RETORT_BINARY_DIR

namespace fs = std::filesystem;

namespace {

const char* const kRungNames[] = {"base", "sandbox", "rewards", "text", "audit", "core", "exe"};

// The rung of a source file, by its path relative to the repository root; -1 outside the ladder.
int rung_of(const std::string& rel) {
  if (rel == "src/common/runtime.h" || rel == "src/common/runtime.cpp" || rel == "src/common/torch_pch.h") return 5;
  struct Folder {
    const char* prefix;
    int rung;
  };
  static const Folder kFolders[] = {
      {"src/common/", 0}, {"sandbox/", 1},   {"rewards/", 2},     {"src/tokenizer/", 3}, {"src/data/", 3}, {"src/audit/", 4},
      {"src/model/", 5},  {"src/rollout/", 5}, {"src/train/", 5}, {"src/dist/", 5},      {"src/cli/", 6},
  };
  for (const auto& f : kFolders)
    if (rel.rfind(f.prefix, 0) == 0) return f.rung;
  return -1;
}

bool is_source(const fs::path& p) {
  const std::string e = p.extension().string();
  return e == ".h" || e == ".hpp" || e == ".cpp" || e == ".cc" || e == ".c" || e == ".inc";
}

// Every include of every source file under `root` that climbs the ladder, as
// "FILE:LINE includes X (rung A includes rung B)".
std::vector<std::string> upward_includes(const fs::path& root, size_t* files_scanned) {
  static const std::regex kInclude(R"(^\s*#\s*include\s*([<"])([^>"]+)[>"])");
  std::vector<std::string> out;
  size_t files = 0;
  for (const char* top : {"src", "sandbox", "rewards"}) {
    if (!fs::exists(root / top)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(root / top)) {
      if (!entry.is_regular_file() || !is_source(entry.path())) continue;
      const std::string rel = fs::relative(entry.path(), root).generic_string();
      const int from = rung_of(rel);
      if (from < 0) continue;
      ++files;
      std::ifstream in(entry.path());
      std::string line;
      int line_no = 0;
      while (std::getline(in, line)) {
        ++line_no;
        std::smatch m;
        if (!std::regex_search(line, m, kInclude)) continue;
        const std::string inc = m[2].str();
        int to = -1;
        if (m[1].str() == "<") {
          for (const char* torch : {"torch/", "ATen/", "c10/"})
            if (inc.rfind(torch, 0) == 0) to = 5;
        } else if (fs::exists(root / "src" / inc)) {
          to = rung_of("src/" + inc);
        } else if (fs::exists(root / inc)) {
          to = rung_of(inc);
        }
        // Anything else (the standard library, packages, files generated next to their module
        // such as warm_server.inc) stays on the includer's rung.
        if (to > from) {
          out.push_back(rel + ":" + std::to_string(line_no) + " includes " + m[1].str() + inc + (m[1].str() == "<" ? ">" : "\"") +
                        " (rung " + kRungNames[from] + " includes rung " + kRungNames[to] + ", which is above it)");
        }
      }
    }
  }
  if (files_scanned) *files_scanned = files;
  return out;
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + "\n";
  return s;
}

}  // namespace

TEST_CASE("no #include crosses the ladder upward", "[unit]") {
  size_t files = 0;
  std::vector<std::string> bad = upward_includes(RETORT_SOURCE_DIR, &files);
  INFO("upward includes:\n" << joined(bad));
  CHECK(bad.empty());
  CHECK(files > 100);  // the scan saw the tree (about 130 files), not an empty folder
}

TEST_CASE("the ladder check names an upward include and passes a downward one", "[unit]") {
  // A small tree of its own: src/common/a.h includes train/x.h (up), src/data/b.cpp includes
  // common/a.h (down), rewards/c.cpp includes <torch/torch.h> (up: Torch is core).
  fs::path root = fs::temp_directory_path() / ("retort_layering_" + std::to_string(::getpid()));
  fs::remove_all(root);
  for (const char* d : {"src/common", "src/data", "src/train", "rewards"}) fs::create_directories(root / d);
  std::ofstream(root / "src/train/x.h") << "#pragma once\n";
  std::ofstream(root / "src/common/a.h") << "#pragma once\n#include <string>\n#include \"train/x.h\"\n";
  std::ofstream(root / "src/data/b.cpp") << "#include \"common/a.h\"\n";
  std::ofstream(root / "rewards/c.cpp") << "// Torch\n#include <torch/torch.h>\n";
  size_t files = 0;
  std::vector<std::string> bad = upward_includes(root, &files);
  fs::remove_all(root);
  INFO(joined(bad));
  CHECK(files == 4);
  REQUIRE(bad.size() == 2);
  CHECK(bad[0].find("src/common/a.h:3 includes \"train/x.h\" (rung base includes rung core") == 0);
  CHECK(bad[1].find("rewards/c.cpp:2 includes <torch/torch.h> (rung rewards includes rung core") == 0);
}
