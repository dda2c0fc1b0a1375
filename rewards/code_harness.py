# retort assert-test harness (parent). Reads its configuration from stdin, runs the
# candidate program in a separate child interpreter, and runs the trusted tests here,
# calling into the child only through plain-data messages. The candidate never shares a
# process with the tests, the expected values or the nonce.
import ast, builtins, importlib, json, os, select, subprocess, sys, time

CHILD = r'''
import builtins, json, os, sys
proto_in = os.fdopen(os.dup(0), "rb", 0)
proto_out = os.fdopen(os.dup(1), "wb", 0)
devnull = os.open(os.devnull, os.O_RDWR)
os.dup2(devnull, 0)
os.dup2(2, 1)
sys.stdin = open(os.devnull)
sys.stdout = sys.stderr

def enc(x, depth=0):
    if depth > 100:
        raise ValueError("value nested too deeply")
    if x is None: return ["n"]
    if isinstance(x, bool): return ["b", bool(x)]
    if isinstance(x, int): return ["i", str(int(x))]
    if isinstance(x, float): return ["f", float.hex(float(x))]
    if isinstance(x, complex): return ["c", float.hex(x.real), float.hex(x.imag)]
    if isinstance(x, str): return ["s", str(x)]
    if isinstance(x, (bytes, bytearray)): return ["y", bytes(x).hex()]
    if isinstance(x, tuple): return ["t", [enc(v, depth + 1) for v in tuple(x)]]
    if isinstance(x, list): return ["l", [enc(v, depth + 1) for v in list(x)]]
    if isinstance(x, dict): return ["d", [[enc(k, depth + 1), enc(v, depth + 1)] for k, v in dict(x).items()]]
    if isinstance(x, frozenset): return ["F", [enc(v, depth + 1) for v in x]]
    if isinstance(x, set): return ["S", [enc(v, depth + 1) for v in x]]
    if isinstance(x, range): return ["r", x.start, x.stop, x.step]
    if hasattr(x, "__next__") and hasattr(x, "__iter__"): return ["it", [enc(v, depth + 1) for v in x]]
    if isinstance(x, type) and x.__module__ == "builtins": return ["type", x.__name__]
    # Anything else stays here; the tests get an opaque handle they can only pass back.
    handles.append(x)
    return ["obj", len(handles) - 1]

handles = []

ns = {"__name__": "solution", "__builtins__": __builtins__}

def dec(v):
    t = v[0]
    if t == "n": return None
    if t == "b": return v[1]
    if t == "i": return int(v[1])
    if t == "f": return float.fromhex(v[1])
    if t == "c": return complex(float.fromhex(v[1]), float.fromhex(v[2]))
    if t == "s": return v[1]
    if t == "y": return bytes.fromhex(v[1])
    if t == "t": return tuple(dec(e) for e in v[1])
    if t == "l": return [dec(e) for e in v[1]]
    if t == "d": return {dec(k): dec(e) for k, e in v[1]}
    if t == "F": return frozenset(dec(e) for e in v[1])
    if t == "S": return set(dec(e) for e in v[1])
    if t == "r": return range(v[1], v[2], v[3])
    if t == "it": return iter([dec(e) for e in v[1]])
    if t == "ref": return ns[v[1]]
    if t == "obj": return handles[v[1]]
    if t == "type": return getattr(builtins, v[1])
    raise ValueError("bad value tag")

def send(obj):
    proto_out.write((json.dumps(obj) + "\n").encode())

def readline():
    buf = b""
    while not buf.endswith(b"\n"):
        c = proto_in.read(1)
        if not c:
            os._exit(0)
        buf += c
    return json.loads(buf)

init = readline()
try:
    with open("candidate.py") as f:
        src = f.read()
    exec(compile(src, "solution.py", "exec"), ns)
    before = set(ns)
    # MBPP runs its setup code after the solution (the setup may build objects of its classes).
    exec(compile(init["setup"], "setup.py", "exec"), ns)
    modules = {k: v.__name__ for k, v in list(ns.items()) if type(v) is type(sys) and not k.startswith("__")}
    send({"ok": True, "names": sorted(k for k, v in list(ns.items()) if callable(v)),
          "setup_names": sorted(k for k in ns if k not in before and not k.startswith("__")),
          "modules": modules})
except BaseException as e:
    send({"ok": False, "error": type(e).__name__ + ": " + str(e)[:300]})
    sys.exit(0)
while True:
    req = readline()
    try:
        fn = ns[req["fn"]]
        r = fn(*dec(req["args"]), **dec(req["kwargs"]))
        send({"ok": True, "value": enc(r)})
    except BaseException as e:
        send({"ok": False, "error": type(e).__name__ + ": " + str(e)[:300]})
'''


class RemoteError(Exception):
    pass


class RemoteObject:
    """An object that lives in the candidate's process; identity is all the tests can see."""
    def __init__(self, handle):
        self._handle = handle


class RemoteRef:
    """A name bound by setup code in the candidate's process (setup that needs the solution)."""
    def __init__(self, name):
        self._name = name


class ChildGone(Exception):
    pass


BUILTIN_TYPES = (int, float, str, bool, complex, bytes, bytearray, list, tuple, dict, set, frozenset, type(None), object)


def enc(x, refs, depth=0):
    if depth > 100:
        raise ValueError("argument nested too deeply")
    if type(x) is RemoteObject: return ["obj", x._handle]
    if type(x) is RemoteRef: return ["ref", x._name]
    if type(x) is type and x in BUILTIN_TYPES: return ["type", x.__name__]
    for name, obj in refs:
        if x is obj and not isinstance(x, (int, float, str, bool, type(None))):
            return ["ref", name]
    if x is None: return ["n"]
    if type(x) is bool: return ["b", x]
    if type(x) is int: return ["i", str(x)]
    if type(x) is float: return ["f", float.hex(x)]
    if type(x) is complex: return ["c", float.hex(x.real), float.hex(x.imag)]
    if type(x) is str: return ["s", x]
    if type(x) in (bytes, bytearray): return ["y", bytes(x).hex()]
    if type(x) is tuple: return ["t", [enc(v, refs, depth + 1) for v in x]]
    if type(x) is list: return ["l", [enc(v, refs, depth + 1) for v in x]]
    if isinstance(x, dict): return ["d", [[enc(k, refs, depth + 1), enc(v, refs, depth + 1)] for k, v in x.items()]]
    if type(x) is frozenset: return ["F", [enc(v, refs, depth + 1) for v in x]]
    if type(x) is set: return ["S", [enc(v, refs, depth + 1) for v in x]]
    if type(x) is range: return ["r", x.start, x.stop, x.step]
    raise TypeError("cannot pass a " + type(x).__name__ + " to the candidate")


# Decoding builds plain builtins only: whatever the child sends, the tests compare values
# of the trusted interpreter's own types (no __eq__ of the candidate's making).
def dec(v, depth=0):
    if depth > 200 or not isinstance(v, list) or not v or not isinstance(v[0], str):
        raise RemoteError("malformed value from candidate")
    t = v[0]
    if t == "n": return None
    if t == "b": return bool(v[1]) if type(v[1]) is bool else _bad()
    if t == "i": return int(str(v[1]))
    if t == "f": return float.fromhex(str(v[1]))
    if t == "c": return complex(float.fromhex(str(v[1])), float.fromhex(str(v[2])))
    if t == "s": return str(v[1]) if type(v[1]) is str else _bad()
    if t == "y": return bytes.fromhex(str(v[1]))
    if t in ("t", "l", "F", "S", "it"):
        items = [dec(e, depth + 1) for e in v[1]]
        return {"t": tuple, "l": list, "F": frozenset, "S": set, "it": iter}[t](items)
    if t == "d": return {dec(k, depth + 1): dec(e, depth + 1) for k, e in v[1]}
    if t == "r": return range(int(v[1]), int(v[2]), int(v[3]))
    if t == "obj": return RemoteObject(int(v[1]))
    if t == "type":
        for ty in BUILTIN_TYPES:
            if ty.__name__ == v[1]:
                return ty
    return _bad()


def _bad():
    raise RemoteError("malformed value from candidate")


class Child:
    def __init__(self, setup, call_timeout):
        self.setup = setup
        self.call_timeout = call_timeout
        self.proc = None
        self.names = []
        self.error = None
        self.start()

    def start(self):
        self.kill()
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", CHILD], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=None, close_fds=True, env={})
        self.buf = b""
        r = self.request({"setup": self.setup}, self.call_timeout * 3)
        self.setup_names, self.modules = [], {}
        if not r.get("ok"):
            self.error = str(r.get("error"))
            self.names = []
        else:
            self.error = None
            self.names = [str(n) for n in r.get("names", [])]
            self.setup_names = [str(n) for n in r.get("setup_names", [])]
            self.modules = {str(k): str(v) for k, v in dict(r.get("modules", {})).items()}

    def kill(self):
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(timeout=5)
            except Exception:
                pass
            self.proc = None

    def request(self, obj, timeout):
        if self.proc is None:
            raise ChildGone("candidate process is not running")
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise ChildGone("candidate process exited")
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise ChildGone("candidate call timed out after %.1f s" % timeout)
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                code = self.proc.poll()
                self.proc = None
                raise ChildGone("candidate process exited (status %s)" % code)
            self.buf += chunk
            if len(self.buf) > (64 << 20):
                self.kill()
                raise ChildGone("candidate answer too large")
        line, self.buf = self.buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            raise RemoteError("malformed message from candidate")

    def call(self, fn, args, kwargs, refs):
        r = self.request({"fn": fn, "args": enc(args, refs), "kwargs": ["d", [[["s", k], enc(v, refs)] for k, v in kwargs.items()]]},
                         self.call_timeout)
        if not isinstance(r, dict):
            raise RemoteError("malformed message from candidate")
        if r.get("ok") is not True:
            raise RemoteError(str(r.get("error"))[:300])
        return dec(r.get("value"))


def main():
    # Modules are imported from the standard library only, never from the work directory
    # (the candidate can write files there).
    here = os.path.dirname(os.path.abspath(sys.argv[0]))
    sys.path[:] = [p for p in sys.path if p not in ("", ".", here)]
    cfg = json.loads(sys.stdin.read())
    sys.stdin = open(os.devnull)
    # Keep the candidate out of this process's memory and files: non-dumpable (no
    # /proc/<pid>/mem or /proc/<pid>/fd for same-uid processes), our own source removed.
    try:
        import ctypes
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4, value 0
    except Exception:
        pass
    try:
        os.unlink(os.path.abspath(sys.argv[0]))
    except Exception:
        pass
    out = os.fdopen(os.dup(1), "w")
    nonce = cfg["nonce"]
    tests = cfg["tests"]
    child = Child(cfg.get("setup", ""), float(cfg.get("call_timeout_s", 5)))
    if child.error is not None:
        out.write("%s LOADFAIL %s\n" % (nonce, json.dumps(child.error)))
    ns = {"__name__": "__tests__"}
    exec(compile(cfg.get("trusted_prelude", ""), "prelude.py", "exec"), ns)
    try:
        exec(compile(cfg.get("setup", ""), "setup.py", "exec"), ns)
    except Exception:
        # Setup that needs the solution's classes (MBPP trees built from its Node): its
        # names live in the candidate's process and are passed by reference.
        for name in child.setup_names:
            if name not in ns:
                ns[name] = RemoteRef(name)
    # A test file that ends by running its own check (HumanEval's `def check(candidate): ...`
    # followed by `check(add)`) is one test block: its definitions load here, and its
    # top-level calls and asserts replace the default `check(candidate)` call.
    test_defs = cfg.get("test_defs", "")
    try:
        tree = ast.parse(test_defs)
    except SyntaxError:
        tree = None
    if tree is not None:
        lines = test_defs.splitlines(True)
        runs = [n for n in tree.body if isinstance(n, ast.Assert) or
                (isinstance(n, ast.Expr) and isinstance(n.value, ast.Call))]
        if runs:
            keep = [n for n in tree.body if n not in runs]
            piece = lambda ns_: "".join("".join(lines[n.lineno - 1:n.end_lineno]) for n in ns_)
            test_defs = piece(keep)
            tests = [piece(runs)]
    exec(compile(test_defs, "tests.py", "exec"), ns)
    # Standard-library modules the solution imported and the tests use by name ("sys").
    stdlib = getattr(sys, "stdlib_module_names", ())
    for name, modname in child.modules.items():
        if name not in ns and modname.split(".")[0] in stdlib:
            try:
                ns[name] = importlib.import_module(modname)
            except Exception:
                pass
    refs = [(k, v) for k, v in ns.items() if not k.startswith("__")]

    def proxy(name):
        def f(*args, **kwargs):
            return child.call(name, args, kwargs, refs)
        f.__name__ = name
        return f

    # Names the tests reach in the candidate: the entry point as `candidate`, and every
    # name the candidate defines that the trusted code does not.
    entry = cfg.get("entry_point")
    if entry:
        ns["candidate"] = ns[entry] = proxy(entry)
    # Called names, in the order a breadth-first walk of each test meets them; then names the
    # tests only pass along (`check(add)` hands the solution's `add` to the trusted check).
    called, passed = [], []
    for src in list(tests) + [test_defs]:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in called:
                called.append(node.func.id)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id not in passed:
                passed.append(node.id)
    # The function under test (MBPP has no entry point): the first called name the solution
    # defines, preferring one that is not a builtin. Only it may shadow a builtin (MBPP's own
    # `sum`); a solution that redefines `abs` or `len` does not reach the tests' use of them.
    target = entry
    if not target:
        defined = [n for n in called if n in child.names and n not in ns]
        plain = [n for n in defined if not hasattr(builtins, n)]
        target = (plain or defined or [None])[0]
    for name in called + [n for n in passed if n not in called]:
        if name in child.names and name not in ns and (not hasattr(builtins, name) or name == target):
            ns[name] = proxy(name)
    stop_first = bool(cfg.get("stop_at_first_failure", False))
    for i, t in enumerate(tests):
        if child.proc is None:
            child.start()
        why = None
        try:
            exec(compile(t, "test_%d.py" % i, "exec"), dict(ns))
        except AssertionError:
            why = "assertion failed"
        except (RemoteError, ChildGone) as e:
            why = str(e)
        except BaseException as e:
            why = type(e).__name__ + ": " + str(e)[:300]
        if why is None:
            out.write("%s PASS %d\n" % (nonce, i))
        else:
            out.write("%s FAIL %d %s\n" % (nonce, i, json.dumps(why)))
        out.flush()
        if why is not None and stop_first:
            break
    out.write("%s DONE %d\n" % (nonce, len(tests)))
    out.flush()
    child.kill()


main()
