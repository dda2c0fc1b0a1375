// The abuse suite: hostile programs, each of which must be contained. Every case checks the
// job's result AND the host side (no stray file, no process left behind, host listener not
// reached, host process alive), and the shared pool must serve correct results afterwards.
//
// Cases run concurrently through the shared 4-worker pool to keep the tier fast; limits are
// small (wall 2 s) so that the slow cases end quickly.
#include <catch2/catch.hpp>

#include <arpa/inet.h>   // defines: htons, inet_addr
#include <fcntl.h>       // defines: fcntl, O_NONBLOCK
#include <netinet/in.h>  // defines: sockaddr_in
#include <sys/socket.h>  // defines: socket, bind, listen, accept
#include <sys/wait.h>    // defines: waitpid
#include <unistd.h>      // defines: fork, close

#include <csignal>     // defines: kill
#include <cstdlib>     // defines: setenv
#include <functional>  // defines: std::function
#include <memory>      // defines: std::unique_ptr
#include <mutex>       // defines: std::once_flag
#include <future>      // defines: std::future
#include <string>      // defines: std::string
#include <vector>      // defines: std::vector

#include "sandbox/executor.h"   // defines: Executor, Job, Result
#include "sandbox_test_util.h"  // defines: shared_executor, py_job, unique_token

using namespace retort::sandbox;

namespace {

struct AbuseCase {
  std::string name;
  Job job;
  std::vector<Status> allowed;                     // acceptable statuses
  std::function<void(const Result&)> check_result;  // extra checks on the result (may be empty)
  std::function<void()> check_host;                 // host-side checks after the result (may be empty)
};

// Near the memory limit the kernel reclaims hard before its OOM killer acts (about 1 s of
// CPU for a 256 MB job here); memory cases get a wall limit that leaves room for that.
constexpr double kMemoryWall = 15;
// The thread bomb is ended by the pids cgroup's cap, not by a timer: 2 s of wall clock ran out
// before the cap on a loaded machine (the abuse cases start together).
constexpr double kCapWall = 15;

Job limited(Job j, double wall = 2) {
  j.limits.wall_s = wall;
  j.limits.cpu_s = wall;
  j.limits.memory_mb = 256;
  j.limits.output_kb = 256;
  return j;
}

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// A TCP listener on 127.0.0.1 of the host: the sandbox must not reach it.
struct HostListener {
  int fd = -1;
  int port = 0;
  HostListener() {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = inet_addr("127.0.0.1");
    a.sin_port = 0;
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    listen(fd, 16);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~HostListener() { close(fd); }
  bool was_contacted() const {
    int c = accept(fd, nullptr, nullptr);
    if (c >= 0) close(c);
    return c >= 0;
  }
};

void check_cases(std::vector<AbuseCase>& cases, Executor& ex) {
  std::vector<std::future<Result>> futs;
  for (auto& c : cases) futs.push_back(ex.submit(c.job));
  for (size_t i = 0; i < cases.size(); ++i) {
    Result r = futs[i].get();
    AbuseCase& c = cases[i];
    INFO("case '" << c.name << "': status " << status_name(r.status) << ", exit " << r.exit_code << ", signal "
                  << r.signal << ", detail '" << r.detail << "'\nstdout: " << r.stdout_text.substr(0, 2000)
                  << "\nstderr: " << r.stderr_text.substr(0, 2000));
    bool allowed = false;
    for (Status s : c.allowed) allowed = allowed || s == r.status;
    CHECK(allowed);
    CHECK(r.wall_s < 20);  // the tree was stopped at its limit, not waited out
    if (c.check_result) c.check_result(r);
    if (c.check_host) c.check_host();
  }
  // The pool still serves correct results after all of the above.
  std::vector<std::future<Result>> after;
  for (int i = 0; i < 8; ++i) after.push_back(ex.submit(py_job("import sys\nprint(int(sys.stdin.read()) + 1)", std::to_string(i))));
  for (int i = 0; i < 8; ++i) {
    Result r = after[i].get();
    CHECK(r.status == Status::Ok);
    CHECK(r.stdout_text == std::to_string(i + 1) + "\n");
  }
}

void runaway_cases(Executor& ex) {
  std::string t_threads = unique_token("1000."), t_child = unique_token("1000."), t_daemon = unique_token("1000."),
              t_fork = unique_token("1000."), t_term = unique_token("1000.");
  auto no_process = [](std::string token) {
    return [token] { CHECK(count_processes_with(token) == 0); };
  };
  // Children exec `sleep TOKEN` so that the host can look for them by command line.
  std::vector<AbuseCase> cases = {
      {"infinite loop", limited(py_job("while True: pass")), {Status::TimeLimit}, nullptr, nullptr},
      {"infinite loop in threads",
       limited(py_job("import threading\n"
                      "def spin():\n    while True: pass\n"
                      "for _ in range(4): threading.Thread(target=spin).start()\n")),
       {Status::TimeLimit}, nullptr, nullptr},
      {"infinite loop in children, parent waits",
       limited(py_job("import os\n"
                      "for _ in range(3):\n"
                      "    if os.fork() == 0:\n"
                      "        os.execv('/bin/sh', ['sh', '-c', 'while :; do :; done', '" + t_child + "'])\n"
                      "os.wait()\n")),
       {Status::TimeLimit}, nullptr, no_process(t_child)},
      {"daemonised grandchildren outlive the parent",
       limited(py_job("import os\n"
                      "for _ in range(3):\n"
                      "    if os.fork() == 0:\n"
                      "        os.setsid()\n"
                      "        if os.fork() == 0:\n"
                      "            os.execv('/bin/sleep', ['sleep', '" + t_daemon + "'])\n"
                      "        os._exit(0)\n"
                      "print('parent done')\n")),
       {Status::Ok}, [](const Result& r) { CHECK(r.stdout_text == "parent done\n"); }, no_process(t_daemon)},
      {"sleeping past the deadline", limited(py_job("import time\ntime.sleep(1000)")), {Status::TimeLimit},
       [](const Result& r) { CHECK(r.wall_s < 8); }, nullptr},
      {"ignoring SIGTERM",
       limited(py_job("import signal, time, os\n"
                      "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP): signal.signal(s, signal.SIG_IGN)\n"
                      "if os.fork() == 0:\n"
                      "    os.execv('/bin/sh', ['sh', '-c', 'trap \"\" TERM INT HUP; sleep " + t_term + "'])\n"
                      "while True: time.sleep(1)\n")),
       {Status::TimeLimit}, nullptr, no_process(t_term)},
      {"fork bomb",
       limited(py_job("import os\n"
                      "while True:\n"
                      "    try:\n"
                      "        if os.fork() == 0:\n"
                      "            os.execv('/bin/sleep', ['sleep', '" + t_fork + "'])\n"
                      "    except OSError:\n"
                      "        pass\n")),
       {Status::TimeLimit, Status::RuntimeError}, nullptr, no_process(t_fork)},
      {"fork bomb via ctypes",
       limited(py_job("import ctypes\nlibc = ctypes.CDLL(None)\n"
                      "while True:\n    libc.fork()\n")),
       {Status::TimeLimit, Status::RuntimeError, Status::MemoryLimit}, nullptr, nullptr},
      {"thread bomb (the pids cgroup caps processes + threads)",
       limited(py_job("import threading, time\n"
                      "n = 0\n"
                      "try:\n"
                      "    while True:\n"
                      "        threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n"
                      "        n += 1\n"
                      "except RuntimeError:\n"
                      "    pass\n"
                      "print(n, flush=True)\n"
                      "import os; os._exit(0)\n"),
               kCapWall),
       {Status::Ok},
       [](const Result& r) {
         int n = std::atoi(r.stdout_text.c_str());
         CHECK(n > 0);
         CHECK(n <= 64);  // Limits::max_processes
       },
       nullptr},
      {"memory bomb", limited(py_job("a = []\nwhile True:\n    a.append(b'x' * (16 << 20))\n"), kMemoryWall), {Status::MemoryLimit},
       [](const Result& r) { CHECK(r.peak_memory_kb <= 270 * 1024); }, nullptr},
      {"memory bomb in a child",
       limited(py_job("import os\n"
                      "if os.fork() == 0:\n"
                      "    a = []\n"
                      "    while True: a.append(b'x' * (16 << 20))\n"
                      "os.wait()\n"),
               kMemoryWall),
       {Status::MemoryLimit, Status::RuntimeError, Status::TimeLimit},
       [](const Result& r) { CHECK(r.peak_memory_kb <= 270 * 1024); }, nullptr},
      {"deep recursion",
       limited(py_job("import sys\nsys.setrecursionlimit(10**9)\n"
                      "def f(n): return f(n + 1) + 1\nf(0)\n"),
               kMemoryWall),
       {Status::RuntimeError, Status::MemoryLimit}, nullptr, nullptr},
      {"huge stdout", limited(py_job("import sys\nwhile True: sys.stdout.write('x' * 65536)\n")), {Status::OutputLimit},
       [](const Result& r) { CHECK(r.stdout_text.size() == 256 * 1024); }, nullptr},
      {"huge stderr", limited(py_job("import os\nwhile True: os.write(2, b'y' * 65536)\n")), {Status::OutputLimit},
       [](const Result& r) {
         CHECK(r.stderr_text.size() == 256 * 1024);
         CHECK(has(r.detail, "stderr"));
       },
       nullptr},
      {"huge stdout from a grandchild",
       limited(py_job("import os\nif os.fork() == 0:\n    os.execv('/usr/bin/yes', ['yes'])\nos.wait()\n")),
       {Status::OutputLimit}, nullptr, nullptr},
  };
  check_cases(cases, ex);
}

void out_of_reach_cases(Executor& ex) {
  std::string tok = unique_token("escape");
  std::string secret = unique_token("secret");
  setenv("RETORT_TEST_SECRET", secret.c_str(), 1);  // the host's environment: must not reach the job
  HostListener listener;
  // A host process the job must not be able to signal.
  std::string host_token = unique_token("1000.");
  pid_t host_proc = fork();
  if (host_proc == 0) {
    execl("/bin/sleep", "sleep", host_token.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  std::vector<AbuseCase> cases = {
      {"disk filling (work dir and /tmp are size-capped tmpfs)",
       limited(py_job("import os\n"
                      "for d in ('/work', '/tmp'):\n"
                      "    total = 0\n"
                      "    try:\n"
                      "        with open(d + '/fill', 'wb') as f:\n"
                      "            while True:\n"
                      "                f.write(b'z' * (1 << 20)); f.flush(); total += 1 << 20\n"
                      "    except OSError as e:\n"
                      "        print(d, 'stopped', e.errno, total >> 20)\n"),
               5),
       {Status::Ok},
       [](const Result& r) {
         CHECK(has(r.stdout_text, "/work stopped"));
         CHECK(has(r.stdout_text, "/tmp stopped"));
       },
       nullptr},
      {"writing outside the work dir",
       limited(py_job("import os\n"
                      "for p in ['/usr/" + tok + "', '/etc/" + tok + "', '/" + tok + "', '/root/" + tok + "',\n"
                      "          '/proc/" + tok + "', '/work/../" + tok + "', '/dev/" + tok + "']:\n"
                      "    try:\n"
                      "        open(p, 'w').write('x'); print('WROTE', p)\n"
                      "    except OSError as e:\n"
                      "        print('denied', p)\n"
                      "open('/tmp/" + tok + "', 'w').write('inside only')\n")),
       {Status::Ok}, [](const Result& r) { CHECK(!has(r.stdout_text, "WROTE /usr")); CHECK(!has(r.stdout_text, "WROTE /etc")); CHECK(!has(r.stdout_text, "WROTE /root")); },
       [tok] {
         for (std::string p : {"/usr/", "/etc/", "/", "/root/", "/tmp/", "/work/", "/dev/"}) {
           CHECK_FALSE(host_path_exists(p + tok));
         }
       }},
      {"reading secrets: /etc/shadow, home, the project",
       limited(py_job("import os\n"
                      "for p in ['/etc/shadow', '/etc/passwd', '/root/.bashrc', '/work/main/CMakeLists.txt',\n"
                      "          '/home', '/root', '/work/main', '/proc/1/root/etc/shadow']:\n"
                      "    try:\n"
                      "        if os.path.isdir(p): print('LISTED', p, os.listdir(p))\n"
                      "        else: open(p).read(); print('READ', p)\n"
                      "    except OSError as e:\n"
                      "        print('denied', p)\n")),
       {Status::Ok},
       [](const Result& r) {
         CHECK(!has(r.stdout_text, "READ"));
         CHECK(!has(r.stdout_text, "LISTED"));
         CHECK(has(r.stdout_text, "denied /etc/shadow"));
       },
       nullptr},
      {"the host's environment and /proc/*/environ",
       limited(py_job("import os, glob\n"
                      "print(dict(os.environ))\n"
                      "for p in glob.glob('/proc/*/environ'):\n"
                      "    try: print(p, open(p, 'rb').read())\n"
                      "    except OSError: print('denied', p)\n")),
       {Status::Ok},
       [secret](const Result& r) {
         CHECK(!has(r.stdout_text, secret));
         CHECK(!has(r.stdout_text, "RETORT_TEST_SECRET"));
         CHECK(has(r.stdout_text, "/proc/1/environ"));  // it looked, and found nothing of ours
       },
       nullptr},
      {"network: loopback (host listener) and beyond",
       limited(py_job("import socket\n"
                      "for host, port in [('127.0.0.1', " + std::to_string(listener.port) + "), ('8.8.8.8', 53), ('1.1.1.1', 80)]:\n"
                      "    try:\n"
                      "        socket.create_connection((host, port), timeout=1); print('CONNECTED', host)\n"
                      "    except OSError as e:\n"
                      "        print('blocked', host, e.errno)\n"
                      "for fam in (socket.AF_INET6, socket.AF_NETLINK, socket.AF_PACKET):\n"
                      "    try: socket.socket(fam, socket.SOCK_RAW if fam != socket.AF_INET6 else socket.SOCK_STREAM); print('SOCKET', fam)\n"
                      "    except OSError as e: print('blocked family', fam)\n"
                      "a, b = socket.socketpair(); a.send(b'unix ok'); print(b.recv(16).decode())\n")),
       {Status::Ok},
       [](const Result& r) {
         CHECK(!has(r.stdout_text, "CONNECTED"));
         CHECK(!has(r.stdout_text, "SOCKET"));
         CHECK(has(r.stdout_text, "unix ok"));  // AF_UNIX stays usable
       },
       [&listener] { CHECK_FALSE(listener.was_contacted()); }},
      {"killing the parent", limited(py_job("import os, time\nos.kill(os.getppid(), 9)\ntime.sleep(30)\n")),
       {Status::RuntimeError, Status::TimeLimit}, nullptr, nullptr},
      {"killing all processes (kill -1)",
       limited(py_job("import os, signal, time\nos.kill(-1, signal.SIGKILL)\ntime.sleep(30)\n")),
       {Status::RuntimeError, Status::TimeLimit}, nullptr,
       [host_token] { CHECK(count_processes_with(host_token) == 1); }},
      {"ptrace of the parent, itself and a child",
       limited(py_job("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                      "child = os.fork()\n"
                      "if child == 0:\n    import time; time.sleep(10); os._exit(0)\n"
                      "for name, req, pid in [('attach parent', 16, os.getppid()), ('attach child', 16, child),\n"
                      "                       ('seize child', 0x4206, child), ('traceme', 0, 0)]:\n"
                      "    rc = libc.ptrace(req, pid, None, None)\n"
                      "    print(name, rc, ctypes.get_errno())\n"
                      "try: open('/proc/%d/mem' % os.getppid(), 'rb'); print('MEM OPEN')\n"
                      "except OSError: print('mem denied')\n"
                      "os.kill(child, 9)\n")),
       {Status::Ok},
       [](const Result& r) {
         CHECK(has(r.stdout_text, "attach parent -1 1\n"));  // EPERM
         CHECK(has(r.stdout_text, "attach child -1 1\n"));
         CHECK(has(r.stdout_text, "seize child -1 1\n"));
         CHECK(has(r.stdout_text, "traceme -1 1\n"));
         CHECK(!has(r.stdout_text, "MEM OPEN"));
       },
       nullptr},
      {"namespaces, mounts and kernel interfaces are denied",
       limited(py_job("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                      "print('unshare', libc.unshare(0x10000000), ctypes.get_errno())\n"   // CLONE_NEWUSER
                      "print('mount', libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())\n"
                      "print('bpf', libc.syscall(321, 0, 0, 0), ctypes.get_errno())\n"
                      "print('keyctl', libc.syscall(250, 0, 0, 0), ctypes.get_errno())\n"
                      "print('perf', libc.syscall(298, 0, 0, -1, -1, 0), ctypes.get_errno())\n"
                      "print('setns', libc.setns(0, 0), ctypes.get_errno())\n"
                      "print('init_module', libc.syscall(175, 0, 0, 0), ctypes.get_errno())\n"
                      "print('kexec', libc.syscall(246, 0, 0, 0, 0), ctypes.get_errno())\n"
                      "st = open('/proc/self/status').read()\n"
                      "print([l for l in st.splitlines() if l.startswith(('CapEff', 'CapPrm', 'NoNewPrivs', 'Seccomp:', 'Uid'))])\n")),
       {Status::Ok},
       [](const Result& r) {
         for (const char* call : {"unshare", "mount", "bpf", "keyctl", "perf", "setns", "init_module", "kexec"}) {
           INFO(call);
           CHECK(has(r.stdout_text, std::string(call) + " -1 1\n"));
         }
         CHECK(has(r.stdout_text, "CapEff:\\t0000000000000000"));
         CHECK(has(r.stdout_text, "CapPrm:\\t0000000000000000"));
         CHECK(has(r.stdout_text, "NoNewPrivs:\\t1"));
         CHECK(has(r.stdout_text, "Seccomp:\\t2"));
         CHECK(has(r.stdout_text, "Uid:\\t65534"));
       },
       nullptr},
      {"C++: fork bomb and memory bomb compiled",
       limited(cpp_job("#include <unistd.h>\n#include <vector>\n#include <cstring>\n"
                       "int main(){ for(int i=0;i<20;i++) fork(); std::vector<char*> v;"
                       " for(;;){ char* p=new char[1<<22]; memset(p,1,1<<22); v.push_back(p);} }")),
       {Status::MemoryLimit, Status::RuntimeError, Status::TimeLimit}, nullptr, nullptr},
  };
  check_cases(cases, ex);
  // The host's own view, after everything.
  CHECK(count_processes_with(host_token) == 1);  // kill(-1) inside did not reach it
  kill(host_proc, SIGKILL);
  waitpid(host_proc, nullptr, 0);
  unsetenv("RETORT_TEST_SECRET");
}

void persistence_cases(Executor& ex) {
  std::string tok = unique_token("persist");
  Result a = ex.submit(limited(py_job("import os\n"
                                      "for d in ('/work', '/tmp', '/dev/shm', '/var/tmp'):\n"
                                      "    try: open(d + '/" + tok + "', 'w').write('x'); print('wrote', d)\n"
                                      "    except OSError: pass\n")))
                 .get();
  INFO(a.stderr_text);
  CHECK(a.status == Status::Ok);
  CHECK(has(a.stdout_text, "wrote /work"));
  CHECK(has(a.stdout_text, "wrote /tmp"));
  // Run the reader on every worker slot: none may see the file.
  std::vector<std::future<Result>> readers;
  for (int i = 0; i < 8; ++i) {
    readers.push_back(ex.submit(limited(py_job("import os\n"
                                              "print([d for d in ('/work', '/tmp', '/dev/shm', '/var/tmp')"
                                              " if os.path.exists(d + '/" + tok + "')])\n"))));
  }
  for (auto& f : readers) {
    Result r = f.get();
    CHECK(r.status == Status::Ok);
    CHECK(r.stdout_text == "[]\n");
  }
  for (std::string d : {"/tmp/", "/dev/shm/", "/var/tmp/", "/work/"}) CHECK_FALSE(host_path_exists(d + tok));
}

}  // namespace

TEST_CASE("abuse: runaway time, processes, threads and memory are contained", "[sandbox]") {
  runaway_cases(shared_executor());
}

TEST_CASE("abuse: the filesystem, environment, network and other processes are out of reach", "[sandbox]") {
  out_of_reach_cases(shared_executor());
}

TEST_CASE("abuse: nothing persists into the next job", "[sandbox]") { persistence_cases(shared_executor()); }

TEST_CASE("abuse, warm workers: runaway time, processes, threads and memory are contained", "[sandbox]") {
  runaway_cases(warm_executor());
}

TEST_CASE("abuse, warm workers: the filesystem, environment, network and other processes are out of reach",
          "[sandbox]") {
  out_of_reach_cases(warm_executor());
}

TEST_CASE("abuse, warm workers: nothing persists into the next job", "[sandbox]") {
  persistence_cases(warm_executor());
}
