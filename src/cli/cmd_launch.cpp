// `retort launch -n N [--master-port P] -- SUBCOMMAND ARGS...`: data parallel on one machine.
//
// Starts N copies of this executable with RANK = 0..N-1, WORLD_SIZE = N, MASTER_ADDR =
// 127.0.0.1 and MASTER_PORT = P (a free port when P is 0), forwards SIGINT / SIGTERM to
// them, stops the others when one fails, and exits with the first non-zero status (128 +
// the signal for a rank killed by one). What it is not: a multi-machine launcher; on
// several hosts set the four variables per process yourself.
#include "cli/commands.h"

#include <arpa/inet.h>   // defines: htonl
#include <netinet/in.h>  // defines: sockaddr_in
#include <signal.h>      // defines: sigaction, kill
#include <sys/prctl.h>   // defines: prctl, PR_SET_PDEATHSIG
#include <sys/socket.h>  // defines: socket, bind
#include <sys/wait.h>    // defines: waitpid
#include <unistd.h>      // defines: fork, execve, getpid

#include <algorithm>   // defines: std::find
#include <cerrno>      // defines: errno
#include <chrono>      // defines: std::chrono
#include <cstring>     // defines: std::strerror
#include <filesystem>  // defines: std::filesystem
#include <map>         // defines: std::map
#include <thread>      // defines: std::this_thread::sleep_for

#include "common/error.h"  // defines: retort::Error

extern char** environ;

namespace retort::cli {

namespace {

volatile sig_atomic_t g_pending_signal = 0;
void on_signal(int sig) { g_pending_signal = sig; }

// A port the kernel reports free on the loopback interface (bound, read back, released).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 29500;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = 29500;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

struct LaunchArgs {
  int nproc = 0;
  int master_port = 0;
  std::vector<std::string> command;
};

int run_launch(const LaunchArgs& args) {
  if (args.nproc < 1) {
    throw Error(ErrorInfo{"launch needs at least one process", "retort launch -n", "-n N with N >= 1", std::to_string(args.nproc), ""});
  }
  if (args.command.empty()) {
    throw Error(ErrorInfo{"launch needs a retort subcommand to run", "retort launch", "retort launch -n N -- sft CONFIG", "nothing",
                          "put the subcommand and its arguments after --"});
  }
  if (args.command[0] == "launch") {
    throw Error(ErrorInfo{"launch cannot launch itself", "retort launch", "a training subcommand (sft, distill, grpo, run)", "launch", ""});
  }
  const std::string exe = std::filesystem::read_symlink("/proc/self/exe").string();
  const int port = args.master_port > 0 ? args.master_port : free_port();

  // The children's environment: ours, with the four variables replaced.
  std::map<std::string, std::string> base;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    size_t eq = kv.find('=');
    if (eq != std::string::npos) base[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  base["WORLD_SIZE"] = std::to_string(args.nproc);
  base["MASTER_ADDR"] = "127.0.0.1";
  base["MASTER_PORT"] = std::to_string(port);

  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: waitpid returns EINTR and the signal is forwarded
  struct sigaction old_int{}, old_term{};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  std::map<pid_t, int> running;  // pid -> rank
  const pid_t parent = ::getpid();
  for (int rank = 0; rank < args.nproc; ++rank) {
    std::map<std::string, std::string> env = base;
    env["RANK"] = std::to_string(rank);
    env["LOCAL_RANK"] = std::to_string(rank);
    std::vector<std::string> env_strings, argv_strings{exe};
    for (const auto& [k, v] : env) env_strings.push_back(k + "=" + v);
    argv_strings.insert(argv_strings.end(), args.command.begin(), args.command.end());
    std::vector<char*> envp, argv;
    for (auto& s : env_strings) envp.push_back(s.data());
    for (auto& s : argv_strings) argv.push_back(s.data());
    envp.push_back(nullptr);
    argv.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
      // The ranks go when the launcher goes, however it went.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(1);
      ::signal(SIGINT, SIG_DFL);
      ::signal(SIGTERM, SIG_DFL);
      ::execve(exe.c_str(), argv.data(), envp.data());
      ::_exit(127);
    }
    if (pid < 0) {
      for (auto& [p, r] : running) ::kill(p, SIGTERM);
      throw Error(ErrorInfo{"launch could not start a rank", "retort launch", "fork() to succeed", std::strerror(errno), "free some memory or processes"});
    }
    running[pid] = rank;
  }
  std::fprintf(stderr, "retort launch: %d ranks of '%s', MASTER_ADDR=127.0.0.1 MASTER_PORT=%d\n", args.nproc, args.command[0].c_str(), port);

  int first_failure = 0;
  bool stopping = false;
  auto stop_at = std::chrono::steady_clock::time_point::max();
  auto stop_all = [&](int sig) {
    for (auto& [p, r] : running) ::kill(p, sig);
  };
  while (!running.empty()) {
    if (g_pending_signal) {
      const int sig = g_pending_signal;
      g_pending_signal = 0;
      stop_all(sig);
      if (!first_failure) first_failure = 128 + sig;
      if (!stopping) stopping = true, stop_at = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    }
    int status = 0;
    // Blocking wait while all is well; polling while the ranks are being stopped (a grace
    // period, then SIGKILL).
    pid_t pid = ::waitpid(-1, &status, stopping ? WNOHANG : 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;  // no children left
    }
    if (pid == 0) {
      if (std::chrono::steady_clock::now() > stop_at) stop_all(SIGKILL);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    auto it = running.find(pid);
    if (it == running.end()) continue;
    const int rank = it->second;
    running.erase(it);
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
    if (code != 0 && !stopping) {
      std::fprintf(stderr, "retort launch: rank %d exited with status %d; stopping the other ranks\n", rank, code);
      first_failure = code;
      stopping = true;
      stop_at = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      stop_all(SIGTERM);
    }
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
  return first_failure;
}

}  // namespace

void register_launch_commands(CLI::App& app) {
  auto args = std::make_shared<LaunchArgs>();
  CLI::App* cmd = app.add_subcommand("launch", "run a subcommand data parallel: N processes on this machine (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)");
  cmd->add_option("-n,--nproc", args->nproc, "number of processes (ranks)")->required();
  cmd->add_option("--master-port", args->master_port, "rendezvous port on 127.0.0.1; 0 = a free port");
  cmd->add_option("command", args->command, "the retort subcommand and its arguments, after --")->required();
  cmd->callback([args, &app] {
    // The subcommand is checked here, once, rather than by N ranks that would each fail.
    const auto names = subcommand_names(app);
    if (!args->command.empty() && std::find(names.begin(), names.end(), args->command[0]) == names.end())
      throw unknown_subcommand_error(args->command[0], names, "retort launch -- " + args->command[0]);
    exit_status() = run_launch(*args);
  });
}

}  // namespace retort::cli
