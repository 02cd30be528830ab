# Sourced by slurm/cpu.sbatch and slurm/gpu.sbatch, not run on its own. Starts
#   LAUNCHER python -m fedmpi run -c JOB.yaml --auto-resume [ARGS...]
# on NTASKS ranks and turns SLURM's signals into a fedmpi checkpoint.
#
# In: NTASKS; the batch script's arguments (JOB.yaml, then options for `fedmpi run`);
#     LAUNCHER=srun (default) | mpiexec | mpirun; SRUN_MPI=pmi2 (default) | pmix | ...
#
# fedmpi checkpoints at its next sync point and exits 0 when any rank gets SIGTERM or
# SIGUSR1; --auto-resume makes every (re)start continue from that checkpoint.
#  - Time limit: `#SBATCH --signal=B:USR1@300` signals this shell only, 300 s before the
#    limit. It passes SIGUSR1 on to the launcher, which gives it to every rank (srun,
#    MPICH's mpiexec and Open MPI's mpirun all do), waits for fedmpi to print
#    "checkpointed", and requeues the job itself (`scontrol requeue`), which then resumes.
#  - Preemption, `scontrol requeue`, `scancel`: SLURM sends SIGTERM to every process of
#    the job, ranks included, and SIGKILL KillWait seconds later (`scontrol show config
#    | grep KillWait`), so a sync point must come within KillWait. A requeued job resumes;
#    after `scancel` the checkpoint stays and submitting the same job again resumes it.
# This shell forwards SIGTERM as SIGUSR1 too: srun answers a SIGTERM of its own, outside
# a job kill, by killing its tasks at once (SIGKILL), before fedmpi could checkpoint.

job=${1:-jobs/default.yaml}
[ $# -gt 0 ] && shift
case ${LAUNCHER:-srun} in
    srun) launch=(srun --mpi="${SRUN_MPI:-pmi2}" -n "$NTASKS") ;;
    mpiexec | mpirun) launch=("$LAUNCHER" -n "$NTASKS") ;;  # the MPI's own launcher, inside the allocation
    *) echo "fedmpi batch: LAUNCHER must be srun, mpiexec or mpirun, not '$LAUNCHER'" >&2; exit 2 ;;
esac

log=$(mktemp "${TMPDIR:-/tmp}/fedmpi-$SLURM_JOB_ID.XXXXXX")  # fedmpi's stdout, to see "checkpointed"
stop=
pid=
on_signal() {
    stop=$1
    echo "fedmpi batch: SIG$1 at $(date +%T), asking fedmpi to checkpoint at its next sync point"
    [ -n "$pid" ] && kill -USR1 "$pid" 2>/dev/null
}
trap 'on_signal TERM' TERM
trap 'on_signal USR1' USR1
trap 'rm -f "$log"' EXIT

echo "fedmpi batch: job $SLURM_JOB_ID, start $((${SLURM_RESTART_COUNT:-0} + 1)), on $SLURM_JOB_NODELIST:" \
     "${launch[*]} python -m fedmpi run -c $job --auto-resume $*"
# tee ignores SIGTERM: a job kill signals every process, and the launcher must keep its stdout.
"${launch[@]}" python -m fedmpi run -c "$job" --auto-resume "$@" > >(trap '' TERM; exec tee -a "$log") &
pid=$!
[ -n "$stop" ] && kill -USR1 "$pid" 2>/dev/null  # a signal that came before the launch
# `wait` returns early when a trapped signal arrives; wait again until the launcher has ended.
while :; do
    rc=0
    wait "$pid" || rc=$?
    kill -0 "$pid" 2>/dev/null || break
done
trap '' TERM USR1  # fedmpi has ended: the kill that follows a requeue has nothing left to ask
wait  # tee
if [ "$stop" = USR1 ] && [ "$rc" = 0 ] && grep -q checkpointed "$log"; then
    echo "fedmpi batch: checkpointed before the time limit, requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit "$rc"
