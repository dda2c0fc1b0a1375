// The language table.
#include "sandbox/languages.h"

namespace retort::sandbox {

namespace {

Limits compile_limits() {
  Limits l;
  l.wall_s = 60;          // g++ -O2 on a contest-sized file takes ~1 s; a loaded machine much more
  l.cpu_s = 60;
  l.memory_mb = 1024;     // template-heavy code needs several hundred MB in cc1plus
  l.output_kb = 64;       // diagnostics beyond this are cut (not a failure: see executor.cpp)
  l.max_processes = 32;   // g++ -> cc1plus, as, collect2, ld
  l.file_size_kb = 65536;
  l.open_files = 256;
  l.workdir_kb = 262144;  // object files and the linked binary
  return l;
}

const std::vector<Language>& table() {
  static const std::vector<Language> t = {
      {"python", "main.py", {}, "", {"/usr/bin/python3", "-B", "-E", "-s", "main.py"},
       {"PYTHONDONTWRITEBYTECODE=1", "PYTHONIOENCODING=utf-8"}, compile_limits(), /*warm_capable=*/true},
      {"cpp", "main.cpp", {"/usr/bin/g++", "-std=c++17", "-O2", "-pipe", "-o", "prog", "main.cpp"}, "prog",
       {"./prog"}, {}, compile_limits(), false},
      {"c", "main.c", {"/usr/bin/gcc", "-std=c11", "-O2", "-pipe", "-o", "prog", "main.c", "-lm"}, "prog",
       {"./prog"}, {}, compile_limits(), false},
  };
  return t;
}

}  // namespace

const Language* find_language(const std::string& name) {
  for (const auto& l : table()) {
    if (l.name == name) return &l;
  }
  if (name == "python3" || name == "py") return find_language("python");
  if (name == "c++" || name == "cxx") return find_language("cpp");
  return nullptr;
}

std::string language_names() {
  std::string s;
  for (const auto& l : table()) s += (s.empty() ? "" : ", ") + l.name;
  return s;
}

}  // namespace retort::sandbox
