"""Requests to object storage from a process forked after its parent used obstore.

obstore runs its requests on one runtime per process whose threads do not survive ``fork``:
a forked child (a DataLoader worker) that calls it hangs. Such a child sends its requests to
a helper started fresh (``python -m mmap_ninja.remote_proxy``, never by fork), one per child,
over a pipe; the helper makes them with its own runtime. A child whose parent never used
obstore uses it directly. Messages are length-prefixed pickles over the helper's stdin and
stdout; errors come back as the exception's class name and its (already secret-free) message.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from typing import Any, Dict, Tuple

_LEN = struct.Struct("<Q")


def _send(stream: Any, obj: Any) -> None:
    blob = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LEN.pack(len(blob)))
    stream.write(blob)
    stream.flush()


def _receive(stream: Any) -> Any:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError
    (n,) = _LEN.unpack(head)
    return pickle.loads(stream.read(n))


class Proxy:
    """One helper process of this process; ``call`` runs ``Client(bucket, options).method(*args)`` there."""

    def __init__(self) -> None:
        import mmap_ninja

        env = dict(os.environ)
        root = os.path.dirname(os.path.dirname(os.path.abspath(mmap_ninja.__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.pid = os.getpid()
        self._proc = subprocess.Popen([sys.executable, "-m", "mmap_ninja.remote_proxy"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=env)
        self._lock = threading.Lock()

    def call(self, bucket_url: str, options: Dict[str, Any], method: str, args: Tuple[Any, ...]) -> Any:
        with self._lock:
            try:
                _send(self._proc.stdin, (bucket_url, options, method, args))
                status, value = _receive(self._proc.stdout)
            except (EOFError, BrokenPipeError, OSError):
                raise OSError(f"the helper process that reads {bucket_url} for this process died") from None
        if status == "ok":
            return value
        kind, message = value
        raise {"FileNotFoundError": FileNotFoundError, "ValueError": ValueError}.get(kind, OSError)(message)

    def close(self) -> None:
        try:
            self._proc.stdin.close()
            self._proc.wait(5)
        except Exception:
            self._proc.kill()


_PROXY: Dict[int, Proxy] = {}


def proxy() -> Proxy:
    """This process's helper (started on first use)."""
    pid = os.getpid()
    if pid not in _PROXY:
        _PROXY.clear()  # an inherited helper belongs to the parent
        _PROXY[pid] = Proxy()
    return _PROXY[pid]


def _serve() -> None:
    from .remote_client import Client

    clients: Dict[Tuple[str, str], Client] = {}
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the reply stream
    while True:
        try:
            bucket_url, options, method, args = _receive(stdin)
        except EOFError:
            return
        key = (bucket_url, repr(sorted(options.items())))
        client = clients.get(key) or clients.setdefault(key, Client(bucket_url, options))
        try:
            value = getattr(client, method)(*args)
            if method == "get_ranges":  # obstore's buffers do not pickle
                value = [bytes(b) for b in value]
            _send(stdout, ("ok", value))
        except Exception as e:
            _send(stdout, ("error", (type(e).__name__, str(e))))


if __name__ == "__main__":
    _serve()
