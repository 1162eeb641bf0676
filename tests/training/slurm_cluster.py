"""A REAL single-node Slurm 22.05 cluster for the tests (../shared/notes/slurm-test-cluster.md).

Debian's ``slurmctld slurmd slurm-client munge`` run as root with no systemd, everything under one temp dir: munged
with its own key and socket, slurmctld, and slurmd for one node ``localhost`` with a fake ``gpu:h200:1`` gres
(``File=/dev/null``) in two partitions, ``debug`` (default) and ``h200``. The ports are picked free at start, so that
two test runs on one machine each get their own cluster.

``slurm_cluster`` (session fixture) starts it, waits until ``sinfo`` shows the node idle, yields a
:class:`SlurmCluster` (``.conf``: the SLURM_CONF path, ``.env()``: an environment for Slurm clients) and stops the
daemons by their pid files at the end (TERM, then KILL). Missing binaries (or not root) skip the tests with the reason;
under ``CI=true`` they fail instead.

By hand: ``python -m tests.training.slurm_cluster`` starts one, prints its SLURM_CONF, and stops it on Ctrl-C.
"""
from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from training_jobs.backends import process_alive

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
START_TIMEOUT = 30.0


def missing_requirements() -> str:
    """Why a cluster cannot start here ("" when it can)."""
    missing = [name for name in BINARIES if not _which(name)]
    if missing:
        return (f"Slurm test cluster: {', '.join(missing)} not found "
                "(apt-get install --no-install-recommends slurmctld slurmd slurm-client munge; see scripts/setup)")
    if os.geteuid() != 0:
        return "Slurm test cluster: slurmctld/slurmd with SlurmUser=root need root"
    return ""


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class SlurmCluster:
    root: Path
    ctld_port: int = 0
    slurmd_port: int = 0
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)

    @property
    def conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def jobcomp_log(self) -> Path:
        return self.root / "log" / "jobcomp.log"

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def pid_files(self) -> list[Path]:
        # Stopped in this order: the node first, then the controller, then munge.
        return [self.root / "run" / "slurmd.pid", self.root / "run" / "slurmctld.pid",
                self.root / "munge" / "munged.pid"]

    # ------------------------------------------------------------------------------------------- configuration

    def write_config(self) -> None:
        for sub in ("etc", "munge", "run", "log", "state", "spool"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        r = self.root
        self.conf.write_text(f"""\
ClusterName=microverse-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=86400
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp_log}
MpiDefault=none
KillWait=5
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}
SlurmdPidFile={r / 'run' / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
SlurmctldDebug=info
SlurmdDebug=info
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory=1000 Gres=gpu:h200:1 Feature=h200 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=h200 Nodes=localhost Default=NO MaxTime=INFINITE State=UP
""")
        (self.root / "etc" / "gres.conf").write_text(
            "AutoDetect=off\nNodeName=localhost Name=gpu Type=h200 File=/dev/null\n")

    # ------------------------------------------------------------------------------------------ start and stop

    def start(self) -> "SlurmCluster":
        self.ctld_port = self.ctld_port or _free_port()
        self.slurmd_port = self.slurmd_port or _free_port()
        while self.slurmd_port == self.ctld_port:
            self.slurmd_port = _free_port()
        self.write_config()
        env = self.env()
        try:
            self._run([_which("munged"), "--key-file", str(self.root / "munge" / "munge.key"),
                       "--socket", str(self.munge_socket), "--pid-file", str(self.root / "munge" / "munged.pid"),
                       "--log-file", str(self.root / "munge" / "munged.log"),
                       "--seed-file", str(self.root / "munge" / "munged.seed"), "--force"], env)
            self._wait(lambda: self.munge_socket.exists(), "munged to open its socket")
            self._run([_which("slurmctld"), "-f", str(self.conf)], env)
            self._wait(lambda: _port_open(self.ctld_port), f"slurmctld to listen on port {self.ctld_port}")
            self._run([_which("slurmd"), "-f", str(self.conf), "-N", "localhost"], env)
            self._wait(self.node_idle, "sinfo to show the node idle")
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self, command: list, env: dict) -> None:
        # The daemons fork into the background; their start-up command returns at once.
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr}\n{self.logs()}")

    def _wait(self, predicate, what: str, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}\n{self.logs()}")

    def node_idle(self) -> bool:
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=self.env(), capture_output=True, text=True,
                                timeout=10)
        return result.returncode == 0 and "idle" in result.stdout.split()

    def logs(self, lines: int = 30) -> str:
        parts = []
        for name in ("munge/munged.log", "log/slurmctld.log", "log/slurmd.log"):
            path = self.root / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self, grace: float = 5.0) -> None:
        """TERM each daemon by its pid file, then KILL what is still alive after `grace` seconds."""
        for pid_file in self.pid_files():
            pid = _read_pid(pid_file)
            if pid is None:
                continue
            _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if process_alive(pid):
                _signal(pid, signal.SIGKILL)
                deadline = time.monotonic() + grace
                while process_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def start_cluster(root: Path | None = None) -> SlurmCluster:
    root = Path(root or tempfile.mkdtemp(prefix="slurm-test-"))
    return SlurmCluster(root=root).start()


_session_cluster: SlurmCluster | None = None


def session_cluster() -> SlurmCluster:
    """One cluster per test process, started on first use and stopped when the process exits. Test modules import
    the fixture below, so pytest holds one fixture definition per module; they all share this one cluster (and none
    of them stops it early for the others)."""
    global _session_cluster
    if _session_cluster is None:
        reason = missing_requirements()
        if reason:
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(reason)
            pytest.skip(reason)
        _session_cluster = start_cluster()
        atexit.register(_stop_session_cluster)
    return _session_cluster


def _stop_session_cluster() -> None:
    global _session_cluster
    cluster, _session_cluster = _session_cluster, None
    if cluster is not None:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A real single-node Slurm cluster for the session (``.conf`` is the SLURM_CONF path); its daemons are stopped
    by their pid files when the test process ends."""
    return session_cluster()


@pytest.fixture
def slurm_settings(slurm_cluster, settings, tmp_path):
    """Django settings pointing the Slurm backend at the test cluster, with a work root in this test's temp dir."""
    settings.TRAINING = {**settings.TRAINING, "SLURM_CONF": str(slurm_cluster.conf),
                         "WORK_ROOT": str(tmp_path / "jobs"), "DEFAULT_PARTITION": "debug"}
    return settings


if __name__ == "__main__":  # pragma: no cover - manual use
    reason = missing_requirements()
    if reason:
        raise SystemExit(reason)
    cluster = start_cluster()
    print(f"export SLURM_CONF={cluster.conf}", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
