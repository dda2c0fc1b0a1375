// Host probing and per-job cgroups (v1 and v2).
#include "sandbox/host.h"

#include <dirent.h>     // defines: opendir, readdir
#include <fcntl.h>      // defines: open, O_WRONLY
#include <sys/stat.h>   // defines: mkdir
#include <sys/wait.h>   // defines: waitpid
#include <unistd.h>     // defines: getuid, rmdir, access

#include <cerrno>    // defines: errno
#include <chrono>    // defines: std::chrono
#include <cstdio>    // defines: popen
#include <cstring>   // defines: strerror
#include <csignal>   // defines: kill, SIGKILL
#include <cstdlib>   // defines: atexit
#include <fstream>   // defines: std::ifstream
#include <mutex>     // defines: std::once_flag
#include <sstream>   // defines: std::istringstream
#include <thread>    // defines: std::this_thread::sleep_for

#include "common/log.h"  // defines: log_info
#include "sandbox/spawn.h"  // defines: spawn_process

namespace retort::sandbox {

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) return "";
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool write_file(const std::string& path, const std::string& value) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, value.data(), value.size()) == static_cast<ssize_t>(value.size());
  close(fd);
  return ok;
}

bool is_dir(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Our own cgroup path in hierarchy `key` ("memory" for v1, "" for the v2 line "0::").
std::string own_cgroup(const std::string& key) {
  std::istringstream in(read_file("/proc/self/cgroup"));
  std::string line;
  while (std::getline(in, line)) {
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string ctrls = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (key.empty() ? (line.compare(0, 3, "0::") == 0) : false) return path;
    std::istringstream cs(ctrls);
    std::string c;
    while (std::getline(cs, c, ',')) {
      if (!key.empty() && c == key) return path;
    }
  }
  return "";
}

std::string join(const std::string& a, const std::string& b) {
  if (b.empty() || b == "/") return a;
  return a + (b[0] == '/' ? "" : "/") + b;
}

// Removes parent dirs left by earlier retort processes that have exited (only empty ones go).
void remove_stale(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.rfind("retort-", 0) != 0) continue;
    int pid = std::atoi(name.c_str() + 7);
    if (pid <= 0 || kill(pid, 0) == 0 || errno != ESRCH) continue;
    std::string p = dir + "/" + name;
    // Children first (job-*), then the parent.
    if (DIR* sub = opendir(p.c_str())) {
      while (dirent* s = readdir(sub)) {
        std::string sn = s->d_name;
        if (sn.rfind("job-", 0) == 0 || sn.rfind("warm-", 0) == 0) rmdir((p + "/" + sn).c_str());
      }
      closedir(sub);
    }
    rmdir(p.c_str());
  }
  closedir(d);
}

std::string make_parent(const std::string& hierarchy_dir) {
  if (!is_dir(hierarchy_dir)) return "";
  remove_stale(hierarchy_dir);
  std::string p = hierarchy_dir + "/retort-" + std::to_string(getpid());
  if (mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) return "";
  return p;
}

void detect_cgroups(HostFacts& f) {
  std::string note;
  // v2: the unified hierarchy, either at /sys/fs/cgroup or at /sys/fs/cgroup/unified (hybrid).
  for (std::string root : {std::string("/sys/fs/cgroup"), std::string("/sys/fs/cgroup/unified")}) {
    if (access((root + "/cgroup.controllers").c_str(), R_OK) != 0) continue;
    std::string own = join(root, own_cgroup(""));
    std::string ctrls = read_file(own + "/cgroup.controllers");
    bool has_mem = ctrls.find("memory") != std::string::npos, has_pids = ctrls.find("pids") != std::string::npos;
    if (!has_mem || !has_pids) {
      note += "cgroup v2 at " + root + " offers [" + ctrls.substr(0, ctrls.find('\n')) +
              "] without memory+pids; ";
      continue;
    }
    // Controllers reach child cgroups only through our subtree_control; writing it fails when
    // our own cgroup holds processes (the "no internal processes" rule) and we are not the root.
    write_file(own + "/cgroup.subtree_control", "+memory +pids +cpu");
    std::string sub = read_file(own + "/cgroup.subtree_control");
    if (sub.find("memory") == std::string::npos || sub.find("pids") == std::string::npos) {
      note += "cgroup v2 at " + own + " is not delegated (cannot enable memory+pids for children); ";
      continue;
    }
    std::string parent = make_parent(own);
    if (parent.empty() ||
        !write_file(parent + "/cgroup.subtree_control", sub.find("cpu") != std::string::npos ? "+memory +pids +cpu"
                                                                                             : "+memory +pids")) {
      note += "cgroup v2: cannot create a job parent under " + own + "; ";
      if (!parent.empty()) rmdir(parent.c_str());
      continue;
    }
    f.cgroup = CgroupMode::V2;
    f.cgroup_memory = f.cgroup_pids = f.cgroup_cpu = parent;
    f.cgroup_note = note + "cgroup v2 at " + parent;
    return;
  }
  // v1: one hierarchy per controller.
  auto v1 = [&](const char* ctrl, const char* probe_file) -> std::string {
    std::string root = std::string("/sys/fs/cgroup/") + ctrl;
    if (!is_dir(root)) return "";
    std::string own = join(root, own_cgroup(ctrl));
    if (access((own + "/cgroup.procs").c_str(), W_OK) != 0) return "";
    std::string parent = make_parent(own);
    if (parent.empty()) return "";
    // A controller file must exist in the new dir (it does for a mounted controller).
    if (access((parent + "/" + probe_file).c_str(), F_OK) != 0) {
      rmdir(parent.c_str());
      return "";
    }
    return parent;
  };
  f.cgroup_memory = v1("memory", "memory.limit_in_bytes");
  f.cgroup_pids = v1("pids", "pids.max");
  f.cgroup_cpu = v1("cpuacct", "cpuacct.usage");
  if (!f.cgroup_memory.empty() || !f.cgroup_pids.empty()) {
    f.cgroup = CgroupMode::V1;
    note += "cgroup v1: memory " + (f.cgroup_memory.empty() ? std::string("missing") : f.cgroup_memory) +
            ", pids " + (f.cgroup_pids.empty() ? std::string("missing") : f.cgroup_pids) + ", cpuacct " +
            (f.cgroup_cpu.empty() ? std::string("missing") : f.cgroup_cpu);
  } else {
    note += "no usable cgroup controllers (limits fall back to rlimits: RLIMIT_NPROC per sandbox uid)";
  }
  f.cgroup_note = note;
}

// Runs `bwrap <namespaces> /bin/true` as a sandbox uid: the one real test of namespaces.
void probe_namespaces(HostFacts& f) {
  SpawnSpec s;
  s.path = f.bwrap_path;
  s.argv = {"bwrap", "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--uid", "65534", "--gid", "65534", "--die-with-parent", "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--remount-ro", "/", "/bin/true"};
  s.envp = {"PATH=/usr/bin:/bin"};
  int err[2];
  if (!make_pipe(err, false, false)) {
    f.namespaces_error = "pipe failed";
    return;
  }
  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  s.fds = {{devnull, 0}, {devnull, 1}, {err[1], 2}};
  if (f.is_root) s.uid = s.gid = static_cast<int>(kSandboxUidBase);
  Spawned sp = spawn_process(s);
  close(err[1]);
  close(devnull);
  std::string msg;
  if (sp.pid > 0) {
    char buf[512];
    ssize_t n;
    while ((n = read(err[0], buf, sizeof buf)) > 0) msg.append(buf, static_cast<size_t>(n));
    int status = 0;
    while (waitpid(sp.pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (sp.pidfd >= 0) close(sp.pidfd);
    f.namespaces_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!f.namespaces_ok) {
      while (!msg.empty() && msg.back() == '\n') msg.pop_back();
      f.namespaces_error = "bwrap could not create the namespaces: " + (msg.empty() ? "exit status " +
                           std::to_string(status) : msg);
    }
  } else {
    f.namespaces_error = sp.error;
  }
  close(err[0]);
}

}  // namespace

std::string HostFacts::report() const {
  std::string s = bwrap_path.empty() ? "bubblewrap: not installed" : bwrap_version + " (" + bwrap_path + ")";
  s += namespaces_ok ? ", namespaces: user+pid+net+ipc+uts+mount ok" : ", namespaces: UNAVAILABLE (" + namespaces_error + ")";
  s += is_root ? ", running as root: jobs run as uid " + std::to_string(kSandboxUidBase) + "+slot" : ", running unprivileged";
  s += ", " + cgroup_note;
  return s;
}

const HostFacts& host_facts() {
  static std::once_flag once;
  static HostFacts facts;
  std::call_once(once, [] {
    facts.is_root = geteuid() == 0;
    for (const char* p : {"/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"}) {
      if (access(p, X_OK) == 0) {
        facts.bwrap_path = p;
        break;
      }
    }
    if (!facts.bwrap_path.empty()) {
      facts.bwrap_version = "bubblewrap";
      FILE* pipe = popen((facts.bwrap_path + " --version 2>/dev/null").c_str(), "r");
      if (pipe != nullptr) {
        char buf[128] = {0};
        if (fgets(buf, sizeof buf, pipe) != nullptr) {
          facts.bwrap_version = buf;
          while (!facts.bwrap_version.empty() && facts.bwrap_version.back() == '\n') facts.bwrap_version.pop_back();
        }
        pclose(pipe);
      }
      probe_namespaces(facts);
    } else {
      facts.namespaces_error = "bubblewrap (bwrap) is not installed";
    }
    detect_cgroups(facts);
    std::atexit(remove_cgroup_parents);
  });
  return facts;
}

void remove_cgroup_parents() {
  const HostFacts& f = host_facts();
  for (const std::string* p : {&f.cgroup_memory, &f.cgroup_pids, &f.cgroup_cpu}) {
    if (!p->empty()) rmdir(p->c_str());
  }
}

// ---------------------------------------------------------------------------------------
// JobCgroup

JobCgroup::~JobCgroup() { destroy(); }

bool JobCgroup::create(const std::string& name, const CgroupLimits& limits, std::string* error) {
  const HostFacts& f = host_facts();
  if (f.cgroup == CgroupMode::None) return true;
  v2_ = f.cgroup == CgroupMode::V2;
  auto make = [&](const std::string& parent) -> std::string {
    if (parent.empty()) return "";
    std::string d = parent + "/" + name;
    for (const auto& existing : dirs_) {
      if (existing == d) return d;  // v2: one dir for all controllers
    }
    if (mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) {
      if (error) *error = "cannot create cgroup " + d + ": " + strerror(errno);
      return "";
    }
    dirs_.push_back(d);
    return d;
  };
  mem_dir_ = make(f.cgroup_memory);
  pids_dir_ = make(f.cgroup_pids);
  cpu_dir_ = make(f.cgroup_cpu);
  if (dirs_.empty()) return false;
  bool ok = true;
  if (!mem_dir_.empty() && limits.memory_bytes > 0) {
    std::string v = std::to_string(limits.memory_bytes);
    if (v2_) {
      ok = ok && write_file(mem_dir_ + "/memory.max", v);
      write_file(mem_dir_ + "/memory.swap.max", "0");
    } else {
      ok = ok && write_file(mem_dir_ + "/memory.limit_in_bytes", v);
      write_file(mem_dir_ + "/memory.memsw.limit_in_bytes", v);  // no swapping past the limit (if swap accounting)
    }
  }
  if (!pids_dir_.empty() && limits.pids > 0) ok = ok && write_file(pids_dir_ + "/pids.max", std::to_string(limits.pids));
  if (!ok && error) *error = "cannot write cgroup limits under " + dirs_.front();
  return ok;
}

std::vector<int> JobCgroup::open_procs_fds() const {
  std::vector<int> fds;
  for (const auto& d : dirs_) {
    int fd = open((d + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
    if (fd >= 0) fds.push_back(fd);
  }
  return fds;
}

std::vector<pid_t> JobCgroup::pids() const {
  std::vector<pid_t> out;
  std::string d = !pids_dir_.empty() ? pids_dir_ : (!mem_dir_.empty() ? mem_dir_ : cpu_dir_);
  if (d.empty()) return out;
  std::istringstream in(read_file(d + "/cgroup.procs"));
  pid_t p;
  while (in >> p) out.push_back(p);
  return out;
}

bool JobCgroup::kill_all(double timeout_s) {
  if (dirs_.empty()) return true;
  if (v2_ && write_file(dirs_.front() + "/cgroup.kill", "1")) {
    // cgroup.kill is atomic against forks; wait for the tasks to go.
  }
  auto start = std::chrono::steady_clock::now();
  int sleep_us = 200;
  while (true) {
    std::vector<pid_t> ps = pids();
    if (ps.empty()) return true;
    for (pid_t p : ps) kill(p, SIGKILL);
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_s) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    sleep_us = std::min(sleep_us * 2, 20000);
  }
}

CgroupStats JobCgroup::stats() const {
  CgroupStats s;
  auto num = [](const std::string& text) -> int64_t { return text.empty() ? -1 : std::atoll(text.c_str()); };
  auto keyed = [](const std::string& text, const std::string& key) -> int64_t {
    std::istringstream in(text);
    std::string k;
    int64_t v;
    while (in >> k >> v) {
      if (k == key) return v;
    }
    return -1;
  };
  if (v2_) {
    if (!cpu_dir_.empty()) {
      int64_t us = keyed(read_file(cpu_dir_ + "/cpu.stat"), "usage_usec");
      if (us >= 0) s.cpu_s = us / 1e6;
    }
    if (!mem_dir_.empty()) {
      s.peak_bytes = num(read_file(mem_dir_ + "/memory.peak"));
      std::string ev = read_file(mem_dir_ + "/memory.events");
      s.oom_kills = std::max<int64_t>(0, keyed(ev, "oom_kill"));
      s.memory_limit_hit = keyed(ev, "max") > 0;
    }
  } else {
    if (!cpu_dir_.empty()) {
      int64_t ns = num(read_file(cpu_dir_ + "/cpuacct.usage"));
      if (ns >= 0) s.cpu_s = ns / 1e9;
    }
    if (!mem_dir_.empty()) {
      s.peak_bytes = num(read_file(mem_dir_ + "/memory.max_usage_in_bytes"));
      s.oom_kills = std::max<int64_t>(0, keyed(read_file(mem_dir_ + "/memory.oom_control"), "oom_kill"));
      s.memory_limit_hit = num(read_file(mem_dir_ + "/memory.failcnt")) > 0;
    }
  }
  return s;
}

void JobCgroup::set_limits(const CgroupLimits& limits) {
  if (!mem_dir_.empty() && limits.memory_bytes > 0) {
    std::string v = std::to_string(limits.memory_bytes);
    if (v2_) {
      write_file(mem_dir_ + "/memory.max", v);
    } else {
      // memsw must stay >= the memory limit: raise it first when growing, lower it last when shrinking.
      write_file(mem_dir_ + "/memory.memsw.limit_in_bytes", v);
      write_file(mem_dir_ + "/memory.limit_in_bytes", v);
      write_file(mem_dir_ + "/memory.memsw.limit_in_bytes", v);
    }
  }
  if (!pids_dir_.empty() && limits.pids > 0) write_file(pids_dir_ + "/pids.max", std::to_string(limits.pids));
}

void JobCgroup::reset_peak() {
  if (mem_dir_.empty()) return;
  if (v2_) {
    write_file(mem_dir_ + "/memory.peak", "0");  // kernels >= 6.12 reset per writer; older ignore
  } else {
    write_file(mem_dir_ + "/memory.max_usage_in_bytes", "0");
    write_file(mem_dir_ + "/memory.failcnt", "0");
  }
}

void JobCgroup::destroy() {
  if (dirs_.empty()) return;
  kill_all();
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    // A just-killed task can linger a moment as a zombie being reaped: retry briefly.
    for (int i = 0; i < 200 && rmdir(it->c_str()) != 0 && errno == EBUSY; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  dirs_.clear();
  mem_dir_.clear();
  pids_dir_.clear();
  cpu_dir_.clear();
}

}  // namespace retort::sandbox
