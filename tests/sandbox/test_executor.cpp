// Ordinary jobs through the pool: results, exit codes, stdin/stdout, large data near the
// caps, C++ compile and run, limits, cancellation, back-pressure, shutdown, rlimits-only.
#include <catch2/catch.hpp>

#include <atomic>  // defines: std::atomic
#include <chrono>  // defines: std::chrono
#include <future>  // defines: std::future
#include <string>  // defines: std::string
#include <thread>  // defines: std::thread
#include <vector>  // defines: std::vector

#include "sandbox/executor.h"   // defines: Executor, Job, Result
#include "sandbox_test_util.h"  // defines: shared_executor, py_job

using namespace retort::sandbox;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

TEST_CASE("python: stdin to stdout", "[sandbox]") {
  Executor& ex = shared_executor();
  Result r = ex.submit(py_job("import sys\nprint(sum(int(x) for x in sys.stdin.read().split()))\n", "1 2 3\n40\n")).get();
  INFO(r.stderr_text << r.detail);
  CHECK(r.status == Status::Ok);
  CHECK(r.exit_code == 0);
  CHECK(r.signal == 0);
  CHECK(r.stdout_text == "46\n");
  CHECK(r.wall_s > 0);
  CHECK(r.cpu_s > 0);
  CHECK(r.peak_memory_kb > 1000);    // a python interpreter, measured in the job's cgroup
  CHECK(r.peak_memory_kb < 200000);  // ... and not the launcher (this test binary)
}

TEST_CASE("ordinary jobs: statuses, exit codes and output", "[sandbox]") {
  struct Case {
    const char* name;
    Job job;
    Status status;
    int exit_code;
    int signal;
    const char* stdout_text;   // exact, or nullptr
    const char* stderr_has;    // substring, or nullptr
  };
  std::vector<Case> cases = {
      {"exit 0", py_job("print('hi')"), Status::Ok, 0, 0, "hi\n", nullptr},
      {"exit 3", py_job("import sys\nprint('partial')\nsys.exit(3)"), Status::RuntimeError, 3, 0, "partial\n", nullptr},
      {"exception", py_job("raise ValueError('boom')"), Status::RuntimeError, 1, 0, "", "ValueError: boom"},
      {"syntax error", py_job("def f(:\n"), Status::RuntimeError, 1, 0, "", "SyntaxError"},
      {"abort", py_job("import os\nos.abort()"), Status::RuntimeError, -1, 6, "", nullptr},
      {"stderr only", py_job("import sys\nsys.stderr.write('warn\\n')"), Status::Ok, 0, 0, "", "warn"},
      {"cpp echo", cpp_job("#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a*b<<\"\\n\";}", "6 7"),
       Status::Ok, 0, 0, "42\n", nullptr},
      {"cpp exit 7", cpp_job("int main(){return 7;}"), Status::RuntimeError, 7, 0, "", nullptr},
      {"cpp segfault", cpp_job("int main(){volatile int* p=nullptr; *p=1; return 0;}"), Status::RuntimeError, -1, 11, "",
       nullptr},
      {"cpp compile error", cpp_job("int main(){ return undeclared_name; }"), Status::CompileError, -1, 0, "",
       "undeclared_name"},
      {"c", [] { Job j = py_job("#include <stdio.h>\nint main(){puts(\"c ok\");return 0;}"); j.language = "c"; return j; }(),
       Status::Ok, 0, 0, "c ok\n", nullptr},
      {"unknown language", [] { Job j = py_job("x"); j.language = "cobol"; return j; }(), Status::SandboxError, -1, 0,
       "", nullptr},
  };
  Executor& ex = shared_executor();
  std::vector<std::future<Result>> futs;
  for (auto& c : cases) futs.push_back(ex.submit(c.job));
  for (size_t i = 0; i < cases.size(); ++i) {
    Result r = futs[i].get();
    const Case& c = cases[i];
    INFO(c.name << ": status " << status_name(r.status) << " detail '" << r.detail << "' stderr " << r.stderr_text);
    CHECK(r.status == c.status);
    if (c.status != Status::SandboxError && c.status != Status::CompileError) {
      CHECK(r.exit_code == c.exit_code);
      CHECK(r.signal == c.signal);
    }
    if (c.stdout_text) CHECK(r.stdout_text == c.stdout_text);
    if (c.stderr_has) CHECK(r.stderr_text.find(c.stderr_has) != std::string::npos);
  }
}

TEST_CASE("unknown language names the known ones", "[sandbox]") {
  Job j = py_job("x");
  j.language = "cobol";
  Result r = shared_executor().submit(j).get();
  CHECK(r.status == Status::SandboxError);
  CHECK(r.detail.find("cobol") != std::string::npos);
  CHECK(r.detail.find("python") != std::string::npos);
}

TEST_CASE("large input and output stream concurrently (no pipe deadlock)", "[sandbox]") {
  // The program echoes line by line while we are still writing: with sequential I/O both
  // sides would block on full 64 KB pipes.
  std::string input;
  for (int i = 0; i < 200000; ++i) input += std::to_string(i) + "\n";  // ~1.3 MB
  Job j = py_job("import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)\n    sys.stderr.write('e')\n", input);
  j.limits.output_kb = 2048;
  Result r = shared_executor().submit(j).get();
  INFO(r.detail);
  REQUIRE(r.status == Status::Ok);
  CHECK(r.stdout_text == input);
  CHECK(r.stderr_text.size() == 200000);
}

TEST_CASE("output exactly at the cap is fine, one byte more is OutputLimit", "[sandbox]") {
  Job at = py_job("import sys\nsys.stdout.write('x' * 65536)");
  at.limits.output_kb = 64;
  Job over = py_job("import sys\nsys.stdout.write('x' * 65537)");
  over.limits.output_kb = 64;
  auto f1 = shared_executor().submit(at);
  auto f2 = shared_executor().submit(over);
  Result r1 = f1.get(), r2 = f2.get();
  CHECK(r1.status == Status::Ok);
  CHECK(r1.stdout_text.size() == 65536);
  CHECK(r2.status == Status::OutputLimit);
  CHECK(r2.stdout_text.size() == 65536);  // cut at the cap
  CHECK(r2.detail.find("stdout") != std::string::npos);
}

TEST_CASE("job files are placed in the work dir", "[sandbox]") {
  Job j = py_job("print(open('data.txt').read().strip(), open('b.csv').read())");
  j.files = {{"data.txt", "hello\n"}, {"b.csv", "1,2"}};
  Result r = shared_executor().submit(j).get();
  INFO(r.stderr_text);
  CHECK(r.status == Status::Ok);
  CHECK(r.stdout_text == "hello 1,2\n");
  Job bad = py_job("print(1)");
  bad.files = {{"../escape", "x"}};
  Result rb = shared_executor().submit(bad).get();
  CHECK(rb.status == Status::SandboxError);
  CHECK(rb.detail.find("file name") != std::string::npos);
}

TEST_CASE("wall and CPU limits", "[sandbox]") {
  Job sleeper = py_job("import time\ntime.sleep(60)");
  sleeper.limits.wall_s = 1;
  Job spinner = py_job("while True: pass");
  spinner.limits.cpu_s = 1;
  spinner.limits.wall_s = 30;
  auto t0 = std::chrono::steady_clock::now();
  auto f1 = shared_executor().submit(sleeper);
  auto f2 = shared_executor().submit(spinner);
  Result r1 = f1.get(), r2 = f2.get();
  CHECK(r1.status == Status::TimeLimit);
  CHECK(r1.detail.find("wall") != std::string::npos);
  CHECK(r1.wall_s < 10);
  CHECK(r2.status == Status::TimeLimit);
  CHECK(r2.detail.find("CPU") != std::string::npos);
  CHECK(r2.cpu_s >= 0.9);
  CHECK(seconds_since(t0) < 20);  // generous: the 1 s limits stopped both
}

TEST_CASE("memory limit covers the whole process tree", "[sandbox]") {
  // Each of 4 children stays under the limit; together they exceed it. rlimits per process
  // would let this run; the job's cgroup does not.
  Job j = py_job(
      "import os, time\n"
      "pids = []\n"
      "for i in range(4):\n"
      "    pid = os.fork()\n"
      "    if pid == 0:\n"
      "        b = b'x' * (50 << 20)\n"
      "        time.sleep(5)\n"
      "        os._exit(0)\n"
      "    pids.append(pid)\n"
      "for p in pids: os.waitpid(p, 0)\n");
  j.limits.memory_mb = 128;
  Result r = shared_executor().submit(j).get();
  INFO(r.detail << r.stderr_text);
  CHECK(r.status == Status::MemoryLimit);
  CHECK(r.peak_memory_kb <= 140 * 1024);
}

// A job built in code skips the config reader: one with a limit out of range is answered at
// once as a sandbox error naming the limit, never run without its cap. The low ends of the
// ranges still run a program.
TEST_CASE("limits out of range are refused; the low ends of the ranges run", "[sandbox]") {
  Job bad = py_job("print('ran')");
  bad.limits.memory_mb = -5;
  Result r = shared_executor().submit(bad).get();
  CHECK(r.status == Status::SandboxError);
  CHECK(r.stdout_text.empty());
  CHECK(r.detail.find("memory_mb = -5") != std::string::npos);
  bad = py_job("print('ran')");
  bad.limits.wall_s = 1e10;
  r = shared_executor().submit(bad).get();
  CHECK(r.status == Status::SandboxError);
  CHECK(r.detail.find("wall_s") != std::string::npos);
  bad = py_job("print('ran')");
  bad.limits.max_processes = 0;
  r = shared_executor().submit(bad).get();
  CHECK(r.detail.find("max_processes") != std::string::npos);

  Job low = py_job("print('ran')");
  low.limits.max_processes = 1;
  low.limits.open_files = 16;
  low.limits.output_kb = 1;
  low.limits.file_size_kb = 64;
  low.limits.workdir_kb = 64;
  r = shared_executor().submit(low).get();
  INFO(r.detail << r.stderr_text);
  CHECK(r.status == Status::Ok);
  CHECK(r.stdout_text == "ran\n");
  Job small = py_job("print('ran')");
  small.limits.memory_mb = 16;
  r = shared_executor().submit(small).get();
  INFO(r.detail << r.stderr_text);
  CHECK((r.status == Status::Ok || r.status == Status::MemoryLimit));  // a cap, never a launcher failure
}

TEST_CASE("a compile is shared by jobs with the same source", "[sandbox]") {
  std::string src = "#include <cstdio>\nint main(){int x; if(scanf(\"%d\",&x)!=1) return 1; printf(\"%d\\n\", x*x);}";
  std::vector<std::future<Result>> futs;
  for (int i = 0; i < 6; ++i) futs.push_back(shared_executor().submit(cpp_job(src, std::to_string(i))));
  for (int i = 0; i < 6; ++i) {
    Result r = futs[i].get();
    INFO(r.detail << r.stderr_text);
    CHECK(r.status == Status::Ok);
    CHECK(r.stdout_text == std::to_string(i * i) + "\n");
  }
}

TEST_CASE("cancel_all answers queued and running jobs, and the pool keeps serving", "[sandbox]") {
  ExecutorConfig cfg;
  cfg.workers = 2;
  Executor ex(cfg);
  std::vector<std::future<Result>> futs;
  for (int i = 0; i < 5; ++i) futs.push_back(ex.submit(py_job("import time\ntime.sleep(30)")));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto t0 = std::chrono::steady_clock::now();
  ex.cancel_all();
  for (auto& f : futs) {
    Result r = f.get();
    CHECK(r.status == Status::SandboxError);
    CHECK(r.detail == "cancelled");
  }
  CHECK(seconds_since(t0) < 10);
  Result after = ex.submit(py_job("print(6*7)")).get();
  CHECK(after.status == Status::Ok);
  CHECK(after.stdout_text == "42\n");
}

TEST_CASE("submit blocks when the queue is full (back-pressure)", "[sandbox]") {
  ExecutorConfig cfg;
  cfg.workers = 1;
  cfg.queue_capacity = 1;
  Executor ex(cfg);
  Job slow = py_job("import time\ntime.sleep(30)");
  std::atomic<int> submitted{0};
  std::vector<std::future<Result>> futs(3);
  std::thread t([&] {
    for (int i = 0; i < 3; ++i) {
      futs[i] = ex.submit(slow);  // 1 runs, 1 waits in the queue, the third must block
      submitted = i + 1;
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  CHECK(submitted.load() == 2);
  ex.cancel_all();  // frees the queue: the blocked submit goes through
  t.join();
  CHECK(submitted.load() == 3);
  ex.cancel_all();
  for (auto& f : futs) CHECK(f.get().status == Status::SandboxError);
}

TEST_CASE("shutdown kills everything the pool started", "[sandbox]") {
  std::string token = unique_token("1000.");
  std::future<Result> fut;
  {
    ExecutorConfig cfg;
    cfg.workers = 2;
    Executor ex(cfg);
    // A daemonised grandchild with a recognisable command line.
    fut = ex.submit(py_job("import os, time\n"
                           "if os.fork() == 0:\n"
                           "    os.setsid()\n"
                           "    os.execv('/bin/sleep', ['sleep', '" + token + "'])\n"
                           "time.sleep(60)\n"));
    for (int i = 0; i < 100 && count_processes_with(token) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    CHECK(count_processes_with(token) == 1);
    ex.shutdown();
    CHECK(count_processes_with(token) == 0);
    CHECK_THROWS(ex.submit(py_job("print(1)")));
  }
  CHECK(fut.get().status == Status::SandboxError);
  CHECK(count_processes_with(token) == 0);
}

TEST_CASE("rlimits-only mode runs jobs without namespaces", "[sandbox]") {
  ExecutorConfig cfg;
  cfg.workers = 1;
  cfg.isolation = "rlimits-only";
  Executor ex(cfg);
  Result r = ex.submit(py_job("import os\nprint(sum(range(10)), os.getcwd().startswith('/tmp/retort-sandbox-'))")).get();
  INFO(r.detail << r.stderr_text);
  CHECK(r.status == Status::Ok);
  CHECK(r.stdout_text == "45 True\n");
  Job loop = py_job("while True: pass");
  loop.limits.wall_s = 1;
  CHECK(ex.submit(loop).get().status == Status::TimeLimit);
  Result c = ex.submit(cpp_job("#include <cstdio>\nint main(){puts(\"ok\");}")).get();
  INFO(c.detail << c.stderr_text);
  CHECK(c.stdout_text == "ok\n");
}

TEST_CASE("warm workers answer python jobs as a fresh interpreter does", "[sandbox]") {
  struct Case {
    const char* source;
    const char* stdin_data;
  };
  const std::vector<Case> cases = {
      {"import sys\nprint(sum(map(int, sys.stdin.read().split())))", "1 2 3"},
      {"print(input()[::-1])\nprint(__name__, __file__)", "abc\n"},
      {"import sys\nprint('partial')\nsys.exit(3)", ""},
      {"raise ValueError('boom')", ""},
      {"def f(:\n", ""},
      {"import os\nos.abort()", ""},
      {"import sys\nsys.exit('message')", ""},
      {"import threading, time\n"
       "def late():\n    time.sleep(0.2); print('thread done', flush=True)\n"
       "threading.Thread(target=late).start()\nprint('main done')", ""},
      {"import atexit\natexit.register(lambda: print('at exit'))\nprint('body')", ""},
      {"import os\nprint(sorted(k for k in os.environ if not k.startswith('LC_')), os.getcwd(), os.listdir('.'))", ""},
  };
  std::vector<std::future<Result>> fresh, warm;
  for (const auto& c : cases) {
    Job j = py_job(c.source, c.stdin_data);
    j.files = {{"extra.txt", "x"}};
    fresh.push_back(shared_executor().submit(j));
    warm.push_back(warm_executor().submit(j));
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    Result f = fresh[i].get(), w = warm[i].get();
    INFO(cases[i].source << "\nfresh: " << status_name(f.status) << " " << f.stdout_text << f.stderr_text
                         << "\nwarm: " << status_name(w.status) << " " << w.stdout_text << w.stderr_text);
    CHECK(w.status == f.status);
    CHECK(w.exit_code == f.exit_code);
    CHECK(w.signal == f.signal);
    CHECK(w.stdout_text == f.stdout_text);
    // Tracebacks match in their last line (the exception), not in every frame.
    auto last_line = [](const std::string& s) {
      std::string t = s;
      while (!t.empty() && t.back() == '\n') t.pop_back();
      return t.substr(t.rfind('\n') == std::string::npos ? 0 : t.rfind('\n') + 1);
    };
    CHECK(last_line(w.stderr_text) == last_line(f.stderr_text));
  }
}
