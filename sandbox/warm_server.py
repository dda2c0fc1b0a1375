# The warm worker's server: a Python interpreter, started once per pool slot inside a full
# sandbox, that forks one child per job. Embedded into the library (warm_server.inc); see warm.h.
# Protocol on fd 8 (a unix socket to the launcher):
#   launcher -> server: 8-byte little-endian length with 3 fds attached (stdin, stdout, stderr
#                       of the job), then that many bytes of JSON {source, files, limits, env}
#   server -> launcher: one JSON line per job {"status": wait status, "maxrss_kb": ...}; first
#                       of all {"ready": true}; {"dirty": why} when the work dir cannot be reset
import builtins, ctypes, io, json, os, resource, socket, stat, struct, sys, traceback, types

libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: jobs run as our uid; they must not reach us through /proc
sock = socket.socket(fileno=8)


def clean(path):
    # Everything under path goes, including entries a job made unreadable (same uid: chmod works).
    for name in os.listdir(path):
        p = os.path.join(path, name)
        st = os.lstat(p)
        if stat.S_ISDIR(st.st_mode):
            os.chmod(p, 0o700)
            clean(p)
            os.rmdir(p)
        else:
            os.unlink(p)


def clean_ipc():
    # System V IPC objects live in the sandbox's IPC namespace, shared by the slot's jobs.
    for kind in ('shm', 'sem', 'msg'):
        try:
            lines = open('/proc/sysvipc/' + kind).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            ident = int(line.split()[1])
            if kind == 'shm':
                libc.shmctl(ident, 0, None)
            elif kind == 'sem':
                libc.semctl(ident, 0, 0)
            else:
                libc.msgctl(ident, 0, None)


def recv_exact(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            os._exit(0)
        buf += chunk
    return bytes(buf)


def run_child(job, fds):
    libc.prctl(4, 1, 0, 0, 0)  # the job's own /proc entries behave as in a fresh process
    os.setsid()
    for i, fd in enumerate(fds):
        os.dup2(fd, i)
    if libc.syscall(436, 3, 0xFFFFFFFF, 0) != 0:  # close_range(3, ~0U, 0): one call, not one per fd
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir('/work')
    lim = job['limits']
    for res, value in ((resource.RLIMIT_CPU, lim['cpu']), (resource.RLIMIT_FSIZE, lim['fsize']),
                       (resource.RLIMIT_NOFILE, lim['nofile']), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(res, (value, value))
    os.environ.clear()
    os.environ.update(job['env'])
    sys.argv = ['main.py']
    sys.path[0] = '/work'
    main = types.ModuleType('__main__')
    main.__file__ = '/work/main.py'
    main.__builtins__ = builtins
    sys.modules['__main__'] = main
    code = 0
    try:
        exec(compile(job['source'], 'main.py', 'exec'), main.__dict__)
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code & 0xFF
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException as e:
        tb = e.__traceback__.tb_next if e.__traceback__ is not None else None  # drop this frame
        traceback.print_exception(type(e), e, tb)
        code = 1
    # What the interpreter does at exit: join non-daemon threads, run atexit, flush.
    try:
        if 'threading' in sys.modules:
            sys.modules['threading']._shutdown()
        import atexit
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    try:
        sys.stdout.flush()
    except BaseException:
        code = code or 120
    try:
        sys.stderr.flush()
    except BaseException:
        pass
    os._exit(code)


sock.sendall(b'{"ready": true}\n')
while True:
    msg, fds, _, _ = socket.recv_fds(sock, 8, 3)
    if not msg:
        os._exit(0)
    if len(msg) < 8:
        msg += recv_exact(8 - len(msg))
    (n,) = struct.unpack('<Q', msg)
    job = json.loads(recv_exact(n))
    # The previous job's processes are dead (the launcher killed them); its files go now.
    try:
        for d in ('/work', '/tmp', '/dev/shm'):  # every writable place of the sandbox
            if os.path.isdir(d):
                clean(d)
        clean_ipc()
        for name, content in [('main.py', job['source'])] + job['files']:
            with open('/work/' + name, 'w', encoding='utf-8') as f:
                f.write(content)
    except OSError as e:
        sock.sendall(json.dumps({'dirty': str(e)}).encode() + b'\n')
        os._exit(0)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            run_child(job, fds)
        finally:
            os._exit(70)
    for fd in fds:
        os.close(fd)
    _, status, ru = os.wait4(pid, 0)
    sock.sendall(json.dumps({'status': status, 'maxrss_kb': ru.ru_maxrss,
                             'cpu_s': ru.ru_utime + ru.ru_stime}).encode() + b'\n')
