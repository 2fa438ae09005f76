"""`python -m flowmap_jax.main ARGS` for the tests, without paying the interpreter's start each time.

A driver process (this file, started once per test session by conftest.py) imports the entry point
and what it imports (JAX, flax, TensorFlow for the writers: about 8 s on 2 cores), and then forks
one child per command line. The child is the entry point as a user runs it: its own process, with
sys.argv, the environment's XLA_FLAGS (read when its JAX backend starts, which happens only in the
child), its exit code, its stdout and stderr; only the imports are shared. No JAX backend exists in
the driver, so nothing that forking could break has started there.

Protocol: one JSON object per line on stdin, {"args": [...], "env": {...}, "cwd": ..., "timeout": s};
one JSON line back, {"returncode": int, "stdout": str, "stderr": str}. A child running past its
timeout is killed (returncode -9), as subprocess.run's timeout would end it.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

import xla_flags


class Result:
  """What subprocess.run returns, as far as the tests read it."""

  def __init__(self, returncode, stdout, stderr):
    self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class Child:
  """A command line started with `Server.start`: a Popen-like handle (pid, poll, send_signal, wait)
  whose stderr is the file `stderr_path`, readable while it runs."""

  def __init__(self, server, pid, stderr_path):
    self._server, self.pid, self.stderr_path = server, pid, stderr_path
    self.returncode, self.result = None, None

  def poll(self):
    if self.returncode is None:
      reply = self._server.request({'op': 'poll', 'pid': self.pid})
      if reply['returncode'] is not None:
        self._finish(reply)
    return self.returncode

  def send_signal(self, sig):
    if self.poll() is None:
      os.kill(self.pid, sig)

  def wait(self, timeout=600):
    if self.returncode is None:
      self._finish(self._server.request({'op': 'wait', 'pid': self.pid, 'timeout': timeout}))
    return self.returncode

  def _finish(self, reply):
    self.result = Result(reply['returncode'], reply['stdout'], reply['stderr'])
    self.returncode = reply['returncode']


class Server:
  """The driver, started in the background. `run(args, env)` is one `python -m flowmap_jax.main`
  run to its end; `start(args, env)` starts one and returns its `Child`. Requests from several
  threads are served one after another."""

  def __init__(self, repo):
    # One CPU device, XLA's backend optimisation off as in the test process (conftest.py): it halves
    # compile times and changes no result a test checks. A request's env may set other flags.
    env = dict(os.environ, XLA_FLAGS=xla_flags.FAST, TF_CPP_MIN_LOG_LEVEL='3')
    self._proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], cwd=repo, env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  bufsize=1)
    self._lock = threading.Lock()
    self._repo = repo

  def request(self, request):
    with self._lock:
      if self._proc.poll() is not None:
        raise RuntimeError(f'the entry-point driver exited ({self._proc.returncode})')
      self._proc.stdin.write(json.dumps(request) + '\n')
      self._proc.stdin.flush()
      return json.loads(self._proc.stdout.readline())

  def _command(self, args, env, cwd):
    return {'args': [str(a) for a in args], 'env': dict(env or {}), 'cwd': str(cwd or self._repo)}

  def start(self, args, env=None, cwd=None):
    reply = self.request(dict(self._command(args, env, cwd), op='start'))
    return Child(self, reply['pid'], reply['stderr_path'])

  def run(self, args, env=None, cwd=None, timeout=600):
    child = self.start(args, env, cwd)
    child.wait(timeout)
    return child.result

  def close(self):
    if self._proc.poll() is None:
      self._proc.stdin.close()
      try:
        self._proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        self._proc.kill()


_SERVER = []


def server():
  """The session's driver, started on first use and closed when the test process exits."""
  if not _SERVER:
    import atexit  # pylint: disable=g-import-not-at-top
    _SERVER.append(Server(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    atexit.register(_SERVER[0].close)
  return _SERVER[0]


def run_main(*args, env=None, cwd=None, timeout=600):
  """subprocess.run([python, -m, flowmap_jax.main, *args]) as the tests use it (one CPU device
  unless env sets XLA_FLAGS)."""
  return server().run(args, env=env, cwd=cwd, timeout=timeout)


def start_main(*args, env=None, cwd=None):
  """subprocess.Popen of the same, as a `Child`."""
  return server().start(args, env=env, cwd=cwd)


def _child(request, out_path, err_path):
  """In the forked child: become `python -m flowmap_jax.main ARGS` and exit with its code."""
  code = 1
  try:
    os.setpgid(0, 0)   # its own process group, as a fresh process would be
    os.chdir(request['cwd'])
    os.environ.update(request['env'])
    for fd, path in ((1, out_path), (2, err_path)):
      f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
      os.dup2(f, fd)
      os.close(f)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.argv = [os.path.join('flowmap_jax', 'main.py')] + request['args']
    from absl import app  # pylint: disable=g-import-not-at-top
    from flowmap_jax import main  # pylint: disable=g-import-not-at-top
    try:
      app.run(main.main, flags_parser=main.parse_flags)
      code = 0
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  except BaseException:  # pylint: disable=broad-except  (an uncaught error: Python's exit 1)
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exc()
    code = 1
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


def _serve():
  # The entry point's imports, done once; none of them starts a JAX backend.
  from absl import app  # pylint: disable=g-import-not-at-top,unused-import
  from flowmap_jax import main, modes, train, validate  # pylint: disable=g-import-not-at-top,unused-import
  root = tempfile.mkdtemp(prefix='flowmap_entry_point_')
  children = {}   # pid -> (stdout path, stderr path)

  def result(pid, status):
    out, err = children.pop(pid)
    read = lambda p: open(p, errors='replace').read() if os.path.exists(p) else ''
    return {'returncode': os.waitstatus_to_exitcode(status), 'stdout': read(out),
            'stderr': read(err)}

  for line in sys.stdin:
    request = json.loads(line)
    op = request['op']
    if op == 'start':
      n = len(os.listdir(root))
      out, err = os.path.join(root, f'{n}.out'), os.path.join(root, f'{n}.err')
      open(err, 'w').close()
      pid = os.fork()
      if pid == 0:
        _child(request, out, err)
      children[pid] = (out, err)
      reply = {'pid': pid, 'stderr_path': err}
    elif op == 'poll':
      done, status = os.waitpid(request['pid'], os.WNOHANG)
      reply = result(done, status) if done else {'returncode': None}
    else:  # wait
      pid, deadline = request['pid'], time.time() + request['timeout']
      while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
          reply = result(pid, status)
          break
        if time.time() > deadline:   # as subprocess.run's timeout: the child is killed
          os.kill(pid, signal.SIGKILL)
          reply = result(pid, os.waitpid(pid, 0)[1])
          break
        time.sleep(0.05)
    sys.stdout.write(json.dumps(reply) + '\n')
    sys.stdout.flush()


if __name__ == '__main__':
  _serve()
