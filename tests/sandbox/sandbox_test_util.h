// Helpers shared by the sandbox tests: one pool per test binary (starting pools is cheap,
// but sharing one also proves it keeps serving correct results after abuse), job builders,
// and host-side checks.
#pragma once

#include <string>  // defines: std::string

#include "sandbox/executor.h"  // defines: Executor, Job

namespace retort::sandbox {

// A full-isolation pool with 4 workers, shared by all [sandbox] tests.
Executor& shared_executor();
// The same with warm workers (python jobs fork from a pre-started sandboxed interpreter).
Executor& warm_executor();

Job py_job(const std::string& source, const std::string& stdin_data = "");
Job cpp_job(const std::string& source, const std::string& stdin_data = "");

// A token unique to this test run (for host-side "nothing left behind" checks): the prefix
// followed by digits, so that unique_token("1000.") is a valid `sleep` duration.
std::string unique_token(const std::string& prefix);
// Number of host processes whose command line contains `token`.
int count_processes_with(const std::string& token);
// True when the host path exists.
bool host_path_exists(const std::string& path);

}  // namespace retort::sandbox
