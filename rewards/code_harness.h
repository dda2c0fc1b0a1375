// The assert-test harness: the Python program the code verifier runs in the sandbox for
// HumanEval- and MBPP-style tests (assert statements written in Python).
//
// Why a harness and not "run solution + tests, exit code 0 = pass": in one interpreter the
// candidate can end the process early with status 0 (os._exit(0), sys.exit(0), an atexit
// hook that exits), return objects whose __eq__ says yes to anything, or read the expected
// value out of the caller's frame (sys._getframe(1).f_locals). So:
//   - The candidate runs in a child interpreter of its own (fresh exec, empty environment,
//     close_fds), reached only through a pipe that carries plain data: arguments go in,
//     return values come back tagged (int, float, str, tuple, list, dict, set, ...) and are
//     rebuilt as the trusted interpreter's own builtins — no candidate type or __eq__
//     crosses. The tests, the expected values and the verdict never live in the candidate's
//     process; the parent makes itself non-dumpable (its /proc memory and fds are closed to
//     same-uid processes) and deletes its own source file before starting the child.
//   - The parent prints one "<nonce> PASS i" / "<nonce> FAIL i reason" line per test and
//     "<nonce> DONE n" at the end; the nonce is fresh per run (read from stdin, never in a
//     file) and the child has no descriptor of the parent's stdout. The host counts only
//     lines with the right nonce and requires a verdict for every test: a harness killed or
//     exited early leaves tests without verdicts, which fail.
//   - A child that dies or hangs fails the test in progress (per-call timeout) and is
//     restarted fresh for the next test.
// Trusted code (the HumanEval prompt's helpers, test code, MBPP setup code) runs in the
// parent; MBPP setup code also runs in the child, after the solution as MBPP orders it,
// since the candidate's functions receive objects it builds: those are passed by name.
// Values that are not plain data (instances of the solution's classes) stay in the child
// and reach the tests as opaque handles, equal only to themselves. The parent imports
// nothing from the work directory (it is off sys.path): the candidate can write files there.
//
// Input on stdin (JSON): nonce, tests (list of Python snippets, one per test), entry_point
// (HumanEval: bound to `candidate` and its own name), trusted_prelude, test_defs, setup,
// call_timeout_s, stop_at_first_failure. The candidate program is the file candidate.py.
#pragma once

namespace retort::rewards {

// The Python source of the harness.
const char* assert_harness_source();

}  // namespace retort::rewards
