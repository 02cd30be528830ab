"""A real one-node SLURM cluster for tests: munged, slurmctld and slurmd from Debian's packages.

Everything lives under one folder (munge key and socket, slurm.conf, state, spool,
logs); nothing in /etc is touched. Client commands find the cluster through
`SLURM_CONF`, which `SlurmCluster.env` sets, so a SLURM installation elsewhere on
the machine is not disturbed. The daemons run in the foreground as children of
this process and are stopped by their process ids.

    python tests/slurm_cluster.py DIR      # start one by hand; prints the env to use, Ctrl-C stops it

The packages come from `.ci/install-slurm`.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "scontrol", "sinfo", "squeue", "scancel")
KILL_WAIT = 30  # s between SIGTERM and SIGKILL when a job is killed or requeued: time to reach a sync point
MIN_CPUS = 4  # CPUs the node declares at least (3 test ranks per node, --ntasks-per-node cannot overcommit)
FAKE_GPUS = 2  # GPU GRES whose device files are /dev/null: for counting ranks, not for CUDA
CRED_EXPIRE = 10  # s; a requeued job becomes eligible again after this, not after SLURM's default 120 s


def find(exe: str) -> str | None:
    return shutil.which(exe) or shutil.which(exe, path="/usr/sbin:/usr/bin:/sbin")


def missing_programs() -> list[str]:
    return [exe for exe in DAEMONS + CLIENTS + ("mungekey",) if find(exe) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(root: Path, node: str, cpus: int, gpus: int) -> str:
    return f"""\
# Written by tests/slurm_cluster.py: a one-node cluster on this machine.
ClusterName=fedmpitest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket={root}/munge/munge.socket,cred_expire={CRED_EXPIRE}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container: follow processes through /proc, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=pmi2
SchedulerType=sched/builtin
# A requeued job waits for its begin time; only the main loop (default every 60 s) sees it pass.
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# Job ids that no earlier test cluster used: under srun, MPICH names its shared memory after
# the job and step, so a segment left in /dev/shm by a killed job 1.0 breaks the next job 1.0.
FirstJobId={random.SystemRandom().randrange(100_000, 60_000_000)}
# The node declares at least MIN_CPUS CPUs, more than a small machine has, because
# --ntasks-per-node cannot overcommit: the test jobs need 3 ranks on one node.
SlurmdParameters=config_overrides
KillWait={KILL_WAIT}
# sbatch --wait polls every 2 s only while that is under MinJobAge/2 (else it backs off to 32 s).
MinJobAge=4
InactiveLimit=0
# Fake GPUs (gres.conf: device files that are /dev/null), only for slurm/gpu.sbatch's rank count.
GresTypes=gpu
NodeName={node} NodeAddr=127.0.0.1 CPUs={max(cpus, MIN_CPUS)}{f" Gres=gpu:{gpus}" if gpus else ""} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """Start with `start()`, stop with `stop()`; `env` is the environment for client commands and jobs."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        self.fake_gpus = 0  # set by start()
        # Jobs inherit this environment (sbatch --export=ALL): no SLURM_* of an enclosing job,
        # the interpreter's folder first on PATH so `python` and `mpiexec` in a job are this test's.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
        bindir = str(Path(sys.executable).parent)
        env.update(SLURM_CONF=str(self.conf), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
                   PATH=os.pathsep.join([bindir, env.get("PATH", ""), "/usr/sbin", "/usr/bin"]))
        self.env = env

    # -- life cycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> "SlurmCluster":
        for sub in ("munge", "state", "spool", "run", "log"):
            (self.root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.chmod(0o700)  # munged refuses a socket or key in a folder others can write
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            subprocess.run([find("mungekey"), "--create", f"--keyfile={key}"], check=True,
                           capture_output=True, timeout=30)
        self.fake_gpus = self._make_fake_gpus()
        self.conf.write_text(_slurm_conf(self.root, self.node, os.cpu_count() or 1, self.fake_gpus))
        munge = self.root / "munge"
        self._spawn("munged", [find("munged"), "--foreground", "--force", f"--socket={munge}/munge.socket",
                               f"--key-file={key}", f"--pid-file={munge}/munged.pid",
                               f"--log-file={self.root}/log/munged.log", f"--seed-file={munge}/munged.seed"])
        self._wait(lambda: (munge / "munge.socket").exists(), 20, "munged's socket")
        self._spawn("slurmctld", [find("slurmctld"), "-D", "-c", "-i", "-f", str(self.conf)])
        self._wait(lambda: self.run(["scontrol", "ping"], check=False).stdout.count("UP") > 0, timeout,
                   "slurmctld to answer `scontrol ping`")
        self._spawn("slurmd", [find("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(lambda: self.node_state() == "idle", timeout, f"node {self.node} to be idle in sinfo")
        return self

    def _make_fake_gpus(self) -> int:
        """GPU GRES need device files; make FAKE_GPUS that are /dev/null (needs CAP_MKNOD), or none."""
        devices = [self.root / f"fakegpu{i}" for i in range(FAKE_GPUS)]
        try:
            for dev in devices:
                if not dev.exists():
                    os.mknod(dev, stat.S_IFCHR | 0o600, os.makedev(1, 3))
        except OSError:
            return 0
        # slurmd reads gres.conf from slurm.conf's folder.
        (self.root / "gres.conf").write_text(f"Name=gpu File={self.root}/fakegpu[0-{FAKE_GPUS - 1}]\n")
        return FAKE_GPUS

    def stop(self) -> None:
        """Cancel every job, wait for them to leave the node, then stop the daemons."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            self.cancel_all()
            try:
                self._wait(lambda: self.run(["squeue", "-h"], check=False).stdout.strip() == "",
                           KILL_WAIT + 30, "jobs to end")
            except RuntimeError as exc:
                print(f"slurm_cluster: {exc}", file=sys.stderr)
        for name in reversed(DAEMONS):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def cancel_all(self) -> None:
        """Cancel every job of this cluster (it is this process's own)."""
        self.run(["scancel", "--full", "--user", str(os.getuid())], check=False)

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "ab")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            stdin=subprocess.DEVNULL)
        log.close()

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited while waiting for {what}\n{self.logs()}")
            if ready():
                return
            time.sleep(0.3)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}\n{self.logs()}")

    def logs(self, tail: int = 30) -> str:
        out = []
        for path in sorted((self.root / "log").glob("*")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"--- {path.name} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(out)

    # -- client commands ----------------------------------------------------------------------------
    def run(self, cmd: list[str], timeout: float = 30, check: bool = True, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a client command against this cluster (with `env` added to `self.env`; sbatch passes
        the environment on to the job); a hang past `timeout` raises TimeoutExpired."""
        proc = subprocess.run(cmd, env={**self.env, **(env or {})}, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def node_state(self) -> str:
        return self.run(["sinfo", "-h", "-n", self.node, "-o", "%t"], check=False).stdout.strip()

    def sbatch(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> int:
        """Submit without waiting; return the job id."""
        out = self.run(["sbatch", "--parsable", *args], cwd=cwd, env=env).stdout
        return int(out.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Restarts, ExitCode, ...); {} once the job is gone."""
        proc = self.run(["scontrol", "show", "job", "-o", str(job_id)], check=False)
        fields = {}
        for token in proc.stdout.split():
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        return fields

    def wait_job(self, job_id: int, done, timeout: float, what: str) -> dict[str, str]:
        """Poll `scontrol show job` until `done(fields)` is true; {} means the job has left
        slurmctld (MinJobAge after it ended). A timeout raises with the job and the logs."""
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if done(info):
                return info
            time.sleep(0.5)
        raise RuntimeError(f"job {job_id}: no {what} after {timeout} s: {info}\n{self.logs()}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    missing = missing_programs()
    if missing:
        print(f"missing: {' '.join(missing)} (run .ci/install-slurm)", file=sys.stderr)
        return 1
    cluster = SlurmCluster(Path(argv[1]))
    try:
        cluster.start()
        print(f"one-node cluster up; in another shell:\n  export SLURM_CONF={cluster.conf}\n"
              f"  export PATH={Path(sys.executable).parent}:$PATH\nCtrl-C stops it.", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
