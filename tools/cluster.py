#!/usr/bin/env python3
"""A Spark standalone cluster on this machine: one master and N workers on 127.0.0.1.

    python tools/cluster.py up [--workers 2] [--cores 1] [--memory 2g] [--dir .cluster]
    python tools/cluster.py status [--dir .cluster]
    python tools/cluster.py down [--dir .cluster]

Each daemon is `spark-class org.apache.spark.deploy.{master.Master,worker.Worker}` from the pyspark
installation, started in its own process group; `down` stops the groups by the process ids kept in
`<dir>/cluster.json` (the executors a worker started are in its group), so nothing stays running.
`up` prints the master URL and waits until every worker has registered. Every port is free-picked,
so a second cluster, or a test's, never collides with one a user already runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / ".cluster"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    if os.environ.get("SPARK_HOME"):
        return Path(os.environ["SPARK_HOME"])
    import pyspark

    return Path(pyspark.__file__).parent


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as answer:
        return json.load(answer)


@dataclass
class Cluster:
    folder: str
    master_url: str = ""
    master_ui: str = ""
    worker_uis: list[str] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    @property
    def state_file(self) -> Path:
        return Path(self.folder) / "cluster.json"

    def save(self) -> None:
        self.state_file.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> Cluster | None:
        state = folder / "cluster.json"
        return cls(**json.loads(state.read_text())) if state.is_file() else None

    def master(self) -> dict[str, Any]:
        """The master's status: workers, active and completed applications."""
        return get_json(f"{self.master_ui}/json/")

    def workers(self) -> list[dict[str, Any]]:
        """Each worker's own status: its executors, running and finished, with their application ids."""
        return [get_json(f"{ui}/json/") for ui in self.worker_uis]

    def running(self, verify: bool = True) -> list[int]:
        """The process groups of this cluster that still have a process in them. With `verify`, a
        group counts only while its leader is still a Spark daemon: after a reboot, a stale
        cluster.json's ids may belong to other programs, which are never signalled."""
        alive = []
        for pid in self.pids:
            try:
                os.killpg(pid, 0)
            except (ProcessLookupError, PermissionError):
                continue
            if not verify or _is_spark_daemon(pid) is not False:
                alive.append(pid)
        return alive


def _is_spark_daemon(pid: int) -> bool | None:
    """Whether `pid` runs a Spark master or worker; None when it has exited (its group may not have)."""
    # -ww: the whole command line; piped, ps would cut it at 80 columns, before the class name.
    shown = subprocess.run(["ps", "-ww", "-o", "command=", "-p", str(pid)], capture_output=True, text=True,
                           check=False)
    if shown.returncode != 0 or not shown.stdout.strip() or "<defunct>" in shown.stdout:
        return None
    return "org.apache.spark.deploy." in shown.stdout


def _daemon(cls: str, args: list[str], log: Path, env: dict[str, str]) -> int:
    script = spark_home() / "bin" / "spark-class"
    with log.open("ab") as out:
        proc = subprocess.Popen([str(script), cls, *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    return proc.pid


def up(folder: Path = DEFAULT_DIR, workers: int = 2, cores: int = 1, memory: str = "2g",
       timeout: float = 120.0) -> Cluster:
    """Start a master and `workers` workers and wait until all have registered."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = Cluster.load(folder)
    if existing and existing.running():
        raise SystemExit(f"cluster: already running in {folder} ({existing.master_url}); 'down' first")
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(folder / "logs"),
           "SPARK_WORKER_DIR": str(folder / "work"), "SPARK_HOME": str(spark_home())}
    # The Python the executors run is the one the driver asks for (PYSPARK_PYTHON), not the workers'.
    (folder / "logs").mkdir(exist_ok=True)
    port, ui = free_port(), free_port()
    cluster = Cluster(folder=str(folder), master_url=f"spark://127.0.0.1:{port}", master_ui=f"http://127.0.0.1:{ui}")
    try:
        cluster.pids.append(_daemon("org.apache.spark.deploy.master.Master",
                                    ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)],
                                    folder / "logs" / "master.log", env))
        cluster.save()
        for i in range(workers):
            wui = free_port()
            cluster.worker_uis.append(f"http://127.0.0.1:{wui}")
            cluster.pids.append(_daemon(
                "org.apache.spark.deploy.worker.Worker",
                ["--host", "127.0.0.1", "--webui-port", str(wui), "--cores", str(cores), "--memory", memory,
                 "--work-dir", str(folder / "work" / f"worker-{i}"), cluster.master_url],
                folder / "logs" / f"worker-{i}.log", env))
            cluster.save()
        _wait_for_workers(cluster, workers, timeout)
    except BaseException:
        down(folder, trusted=True)  # started just now by this process: no need to recognise them
        raise
    return cluster


def _wait_for_workers(cluster: Cluster, workers: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        if len(cluster.running(verify=False)) < len(cluster.pids):
            raise SystemExit(f"cluster: a daemon exited at start; see {cluster.folder}/logs")
        with contextlib.suppress(OSError, ValueError):
            seen = cluster.master()
            alive = [w for w in seen.get("workers", []) if w.get("state") == "ALIVE"]
            if len(alive) >= workers:
                with contextlib.suppress(OSError, ValueError):
                    cluster.workers()  # their own UIs answer too
                    return
        time.sleep(0.5)
    raise SystemExit(f"cluster: {workers} worker(s) did not register within {timeout:.0f}s "
                     f"(master said {seen}); see {cluster.folder}/logs")


def down(folder: Path = DEFAULT_DIR, timeout: float = 30.0, trusted: bool = False) -> list[int]:
    """Stop every process group of the cluster; SIGKILL what SIGTERM did not end. Returns the process
    groups it stopped. `trusted`: the ids are known to be this cluster's (see `Cluster.running`)."""
    cluster = Cluster.load(folder)
    if cluster is None:
        return []
    stopping = cluster.running(verify=not trusted)
    for pid in stopping:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while cluster.running(verify=not trusted) and time.monotonic() < deadline:
        _reap(cluster.pids)
        time.sleep(0.2)
    for pid in cluster.running(verify=not trusted):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    while cluster.running(verify=not trusted) and time.monotonic() < deadline + 10:
        _reap(cluster.pids)
        time.sleep(0.2)
    if cluster.running(verify=not trusted):
        raise SystemExit(f"cluster: processes {cluster.running(verify=not trusted)} did not stop")
    cluster.state_file.unlink()
    return stopping


def _reap(pids: list[int]) -> None:
    """Collect the daemons that were this process's children (a test's own cluster) once they exit,
    so they do not linger as zombies; other children are left to their owners."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cluster", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state and logs (default .cluster)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cores", type=int, default=1, help="cores per worker")
    p.add_argument("--memory", default="2g", help="memory per worker for executors")
    args = p.parse_args(argv)
    if args.action == "up":
        c = up(args.dir, args.workers, args.cores, args.memory)
        print(f"cluster: master {c.master_url} (UI {c.master_ui}), {args.workers} worker(s); "
              f"stop with 'make cluster-down'\n  SPARK_MASTER={c.master_url} ./spark-submit.sh pipeline ...")
    elif args.action == "down":
        stopped = down(args.dir)
        print(f"cluster: stopped {len(stopped)} process group(s)" if stopped else "cluster: not running")
    else:
        c = Cluster.load(args.dir)
        if c is None or not c.running():
            print("cluster: not running")
            return 1
        m = c.master()
        print(f"cluster: {c.master_url}, {len(m.get('workers', []))} worker(s), "
              f"{len(m.get('activeapps', []))} running and {len(m.get('completedapps', []))} completed application(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
