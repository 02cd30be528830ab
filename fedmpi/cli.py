"""Command line: `python -m fedmpi [run] ...` and `python -m fedmpi check JOB.yaml`.

`run` is the default command, so `mpirun -n 3 python -m fedmpi` runs
jobs/default.yaml. Roles are dispatched here, once: rank 0 coordinates,
ranks 1..W train.
"""

from __future__ import annotations

import argparse
import os
import sys

from fedmpi import __version__
from fedmpi.errors import UsageError

DEFAULT_JOB = os.path.join("jobs", "default.yaml")
COMMANDS = ("run", "check", "analyze")

DESCRIPTION = """\
fedmpi: federated learning over MPI with information-theoretic traces.

Rank 0 is the coordinator (aggregates, evaluates, estimates mutual information,
writes the HDF5 trace); ranks 1..W are workers that train on their own shard.

commands:
  run     train a job (the default command): mpirun -n 3 python -m fedmpi -c JOB.yaml
  check   validate a job file and print its resolved config, without running it
  analyze summarise traces, draw the paper's figures, export CSV, re-estimate MI

examples:
  mpirun -n 3 python -m fedmpi --progress live       # jobs/default.yaml, 2 workers
  mpirun -n 5 python -m fedmpi -c jobs/smoke.yaml    # 4 workers, synthetic data
  mpirun -n 3 python -m fedmpi --set sync.every=1000 --set sync.redistribute=false
  python -m fedmpi check jobs/default.yaml
  python -m fedmpi analyze runs/default.h5 --plots figures/
"""


def _add_job_args(p: argparse.ArgumentParser, with_config_flag: bool) -> None:
    if with_config_flag:
        p.add_argument("-c", "--config", metavar="FILE", default=None,
                       help=f"job file (YAML); default: {DEFAULT_JOB}")
    p.add_argument("--set", dest="overrides", metavar="SECTION.KEY=VALUE", action="append", default=[],
                   help="override one config field, e.g. --set train.lr=0.05 (repeatable; the value is YAML)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fedmpi", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"fedmpi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,check,analyze}")
    run = sub.add_parser("run", help="train a job (default command)", description=(
        "Train a job under MPI: rank 0 coordinates, ranks 1..N-1 are workers (mpirun -n N, N >= 2). "
        "Writes the trace to OUT/<trace.path> (trace.path defaults to '{job}.h5', {job} being the "
        "job file's name) and, every checkpoint.every sync points, a checkpoint next to it. SIGTERM or "
        "SIGUSR1 make the job checkpoint at its next sync point and exit 0; --resume continues it."))
    _add_job_args(run, with_config_flag=True)
    run.add_argument("-o", "--out", metavar="DIR", default="runs",
                     help="folder for the trace (default: runs/)")
    run.add_argument("--force", action="store_true", help="overwrite an existing trace (and drop its checkpoint)")
    run.add_argument("--resume", metavar="TRACE", default=None,
                     help="continue the run whose trace is TRACE (runs/NAME.h5 or runs/NAME) from its "
                          "checkpoint runs/NAME.ckpt; appends to the same trace. The config and the number "
                          "of ranks must be those of the checkpoint")
    run.add_argument("--auto-resume", action="store_true",
                     help="resume from the job's checkpoint if there is one, else start fresh "
                          "(for requeued batch jobs)")
    run.add_argument("--progress", choices=("auto", "live", "plain"), default="auto",
                     help="coordinator console: a live progress display, plain lines (logs), or "
                          "auto = live when stdout is a terminal (under mpirun it is a pipe, or Open MPI's own "
                          "pseudo-terminal, so auto is plain: use live)")
    check = sub.add_parser("check", help="validate a job file without running it",
                           description="Validate a job file (and --set overrides); print the resolved config.")
    check.add_argument("job", metavar="JOB.yaml", help="job file to validate")
    _add_job_args(check, with_config_flag=False)
    from fedmpi.analysis import cli as analysis_cli
    analysis_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run"] + argv  # `run` is the default command
    args = build_parser().parse_args(argv)
    if args.command == "check":
        return _check(args)
    if args.command == "analyze":
        from fedmpi.analysis import cli as analysis_cli
        return analysis_cli.main(args)
    return _run(args)


def _error(message: str) -> int:
    sys.stderr.write(f"fedmpi: error: {message}\n")
    sys.stderr.flush()
    return 2


def _check(args) -> int:
    from fedmpi import config
    from fedmpi.data import SHAPES
    from fedmpi.local import check_plugins
    try:
        cfg = config.load(args.job, args.overrides)
        input_shape, num_classes = SHAPES[cfg.data.name]
        check_plugins(cfg, input_shape, num_classes, cfg.clients.total or 1)
        _check_extras(cfg)
    except UsageError as exc:
        return _error(str(exc))
    print(f"# {args.job}: valid; resolved config:")
    print(config.to_yaml(cfg), end="")
    return 0


def too_few_ranks(world_size: int, environ, library: str) -> str:
    """The error for a world of one rank; names the likely cause when a launcher started more."""
    started = max((int(environ.get(name, "")) for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
                   if environ.get(name, "").isdigit()), default=world_size)
    if started > world_size:
        # MPICH's mpirun with an mpi4py built for Open MPI (or the reverse): each rank is alone.
        return (f"the launcher started {started} ranks, but each sees a world of {world_size}: the "
                f"launcher belongs to another MPI than the one mpi4py uses ({library}); launch with "
                "that MPI's mpirun (docs/cluster.md, Open MPI)")
    return ("fedmpi needs at least 2 MPI ranks (rank 0 coordinates, ranks 1.. train); "
            "launch it as e.g. `mpirun -n 3 python -m fedmpi` for 2 workers")


def _run(args) -> int:
    from fedmpi.comm import Comm
    comm = Comm()
    if comm.world_size < 2:
        from mpi4py import MPI  # initialised by Comm() already
        library = MPI.Get_library_version().splitlines()[0].split(",")[0].strip()
        return _error(too_few_ranks(comm.world_size, os.environ, library))
    try:
        return _run_job(comm, args)
    except UsageError as exc:
        # Raised identically on every rank (same config, same files): rank 0 speaks for all.
        return _error(str(exc)) if comm.is_coordinator else 2


def _check_extras(cfg) -> None:
    """Optional packages a job asks for, checked before anything runs."""
    if cfg.trace.tensorboard:
        from fedmpi.tensorboard import require
        require("trace.tensorboard")


def _run_job(comm, args) -> int:
    import yaml

    from fedmpi import checkpoint, config, data
    from fedmpi.comm import run_or_abort
    from fedmpi.stop import StopRequest
    from fedmpi.trace import check_writable

    stop = StopRequest().install()  # before anything slow: a signal from now on means "checkpoint and stop"
    if args.resume:
        if args.auto_resume or args.force:
            raise UsageError("--resume takes neither --auto-resume nor --force")
        trace_path = args.resume if args.resume.endswith(".h5") else args.resume + ".h5"
        given = None
        if args.config or args.overrides:
            given = config.load(args.config, args.overrides) if args.config else None
    else:
        path = args.config
        if path is None:
            if not os.path.exists(DEFAULT_JOB):
                raise UsageError(f"no -c/--config given and {DEFAULT_JOB} is not here; run from the fedmpi "
                                 "folder or pass -c JOB.yaml")
            path = DEFAULT_JOB
        given = config.load(path, args.overrides)
        job = config.job_name(path)
        trace_path = os.path.join(args.out, given.trace.path.replace("{job}", job).replace("{seed}",
                                                                                        str(given.seed)))
    ckpt_path = checkpoint.path_for(trace_path)
    resume_state: dict = {}

    def preflight():
        """On the coordinator: decide fresh or resumed, check paths and data."""
        if args.resume or (args.auto_resume and os.path.exists(ckpt_path)):
            if not os.path.exists(trace_path):
                raise UsageError(f"cannot resume: trace {trace_path} does not exist")
            state = checkpoint.load(ckpt_path)
            resume_state.update(state)
            from fedmpi.trace import open_trace
            with open_trace(trace_path) as f:
                job_name = str(f.attrs["job"])
            meta = {"config": state["config"], "world_size": state["world_size"], "job": job_name,
                    "sync_index": state["sync_index"]}
            stored = config.from_dict(yaml.safe_load(state["config"]))
            _check_extras(stored)
            data.ensure_available(stored.data)
            return meta
        _check_extras(given)
        check_writable(trace_path, args.force)
        if args.force:
            checkpoint.remove(ckpt_path)  # a stale checkpoint must not be resumed into the new trace
        data.ensure_available(given.data)
        return None

    meta = comm.agree(preflight)
    if meta is None:
        cfg = given
    else:
        cfg = config.from_dict(yaml.safe_load(meta["config"]))
        job = meta["job"]
        if args.resume and args.overrides and given is None:
            raw = yaml.safe_load(meta["config"])
            for assignment in args.overrides:
                config.apply_override(raw, assignment)
            given = config.from_dict(raw)
        if given is not None and given != cfg:
            raise UsageError(f"cannot resume {trace_path} with a changed config: "
                             + "; ".join(config.differences(cfg, given)) + " (stored -> given)")
        if meta["world_size"] != comm.world_size:
            raise UsageError(f"cannot resume {trace_path}: it ran on {meta['world_size']} ranks "
                             f"({meta['world_size'] - 1} workers), this job has {comm.world_size}; "
                             f"launch it with mpirun -n {meta['world_size']}")

    from fedmpi.plan import make_plan
    dataset = data.load(cfg.data, cfg.clients.total or comm.num_workers, cfg.seed)
    plan = make_plan(cfg, dataset.train_y, len(dataset.test_y), comm.num_workers, dataset.test_y)
    from fedmpi.local import check_plugins
    check_plugins(cfg, dataset.input_shape, dataset.num_classes, plan.num_clients)
    resuming = meta is not None

    if comm.is_coordinator:
        from fedmpi.console import Console
        from fedmpi.coordinator import run_coordinator
        live = {"auto": None, "live": True, "plain": False}[args.progress]
        # Under a sync policy other than periodic the number of sync points is known only at the end.
        rounds = plan.schedule.num_rounds if cfg.sync.policy.name == "periodic" else None
        console = Console(job, rounds, plan.schedule.total_steps, live=live)
        return run_or_abort(comm, lambda: run_coordinator(comm, cfg, dataset, plan, trace_path, job, console, stop,
                                                          resume_state if resuming else None))
    from fedmpi.worker import run_worker
    return run_or_abort(comm, lambda: run_worker(comm, cfg, dataset, plan, stop, resume=resuming))
