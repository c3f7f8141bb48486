#!/usr/bin/env bash
# Re-records the Slurm tool outputs in this directory from a real local cluster.
#
#   bash tests/data/slurm/record.sh
#
# Needs root. Starts a clean cluster with ci/slurm/run.sh (job ids start at 1), submits jobs
# in many states, records stdout / stderr / exit code of sbatch, squeue, scontrol, sacct and
# scancel, then stops the cluster. Takes about 3-4 minutes (one job must hit its time limit).
#
# Each case NAME gives NAME.txt (stdout) and/or NAME.stderr.txt (stderr); empty streams get no
# file, except that a case with neither gets an empty NAME.txt. README.md lists every case
# with its exact command line and exit code.
set -Eeuo pipefail
trap 'rc=$?; echo "record.sh: line $LINENO: \"$BASH_COMMAND\" failed (exit $rc)" >&2' ERR
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
RUN=$REPO/ci/slurm/run.sh
W=/tmp/slurm-record
T0=$(date +%s)

log() { echo "[record +$(( $(date +%s) - T0 ))s] $*"; }

rm -rf "$W"
mkdir -p "$W"
chmod 0777 "$W"
cd "$W"

# Fresh data files.
find "$HERE" -maxdepth 1 -type f -name '*.txt' -delete
CASES=$W/cases.md
: >"$CASES"

# shq ARGS...: the arguments as a readable shell command line.
shq() {
    local a out=() sq="'\\''"
    for a in "$@"; do
        if [[ $a =~ ^[A-Za-z0-9_./=:,@%+-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/$sq}'"); fi
    done
    echo "${out[*]}"
}

# rec NAME NOTE CMD...: run CMD, store its streams, add a README row.
rec() {
    local name=$1 note=$2; shift 2
    local out=$HERE/$name.txt err=$HERE/$name.stderr.txt rc files shown
    rc=0
    "$@" >"$out" 2>"$err" || rc=$?
    [[ -s $err ]] || rm -f "$err"
    if [[ ! -s $out && -f $err ]]; then rm -f "$out"; fi
    files=""
    [[ -f $out ]] && files="\`$name.txt\`"
    [[ -f $err ]] && files="$files${files:+ }\`$name.stderr.txt\`"
    shown=$(shq "$@")
    printf '| %s | `%s` | %s | %s |\n' "$files" "${shown//|/\\|}" "$rc" "${note//|/\\|}" >>"$CASES"
    log "$name: exit $rc"
}

# keep NAME SRC NOTE: copy a job output file.
keep() {
    cp "$2" "$HERE/$1.txt"
    printf '| `%s.txt` | content of `%s` | - | %s |\n' "$1" "${2/$W/\$W}" "${3//|/\\|}" >>"$CASES"
    log "$1: copied"
}

# sub ARGS...: sbatch --parsable, prints the job id.
sub() { local id; id=$(sbatch --parsable "$@"); echo "${id%%;*}"; }

state() { squeue -h -t all -j "$1" -o %T 2>/dev/null || true; }

# wait_state ID TIMEOUT STATE...: wait until the job is in one of the states.
wait_state() {
    local id=$1 limit=$2 st; shift 2
    local deadline=$(( $(date +%s) + limit ))
    while :; do
        st=$(state "$id")
        for want in "$@"; do [[ $st == "$want" ]] && return 0; done
        (( $(date +%s) < deadline )) || { echo "job $id: state '$st', wanted $*" >&2; return 1; }
        sleep 0.2
    done
}

# ------------------------------------------------------------------ cluster
"$RUN" stop
SLURM_CLEAN_STATE=1 "$RUN" start

rec version_sbatch "client version" sbatch --version
rec version_squeue "" squeue --version

# ------------------------------------------------------------------ jobs
# TIMEOUT first: it takes ~80 s to be killed.
T=$(sub -J timeout_job --time=00:01:00 -o "$W/timeout_job-%j.out" --wrap 'echo started; sleep 200')
log "timeout job $T submitted"

# 1. sbatch output
rec sbatch_plain "job that completes (echo)" \
    sbatch -J completed_job -o "$W/%x-%j.out" --wrap 'echo hello'
C=$(awk '{ print $4 }' "$HERE/sbatch_plain.txt")
rec sbatch_parsable "job that fails with exit 3" \
    sbatch --parsable -J failed_job -o "$W/%x-%j.out" --wrap 'echo failing >&2; exit 3'
F=$(cat "$HERE/sbatch_parsable.txt")
rec sbatch_parsable_array "array job, 3 tasks that complete" \
    sbatch --parsable -J array_done --array=0-2 -o "$W/%x-%A_%a.out" --wrap 'true'
A1=$(cat "$HERE/sbatch_parsable_array.txt")

# 2. sbatch errors
cat >"$W/no_shebang.sh" <<'EOF'
echo this script has no interpreter line
EOF
rec sbatch_error_invalid_partition "" sbatch -p nosuchpart --wrap true
rec sbatch_error_mem_too_large "node has ~23.5 GB; leaves a FAILED job (BadConstraints)" \
    sbatch --mem=100G --wrap true
rec sbatch_error_invalid_time "" sbatch --time=abc --wrap true
rec sbatch_error_too_many_cpus "node has 16 CPUs, EnforcePartLimits=ALL" sbatch -c 17 --wrap true
rec sbatch_error_too_many_nodes "single-node cluster, EnforcePartLimits=ALL" sbatch -N 2 --wrap true
rec sbatch_error_no_shebang "script file without #!" sbatch "$W/no_shebang.sh"
rec sbatch_error_missing_script "" sbatch /nonexistent/script.sh
MEMFAIL=$(squeue -h -t all -o '%i %r' | awk '$2 == "BadConstraints" { print $1 }' | head -n1)

# Job whose script calls an interpreter that does not exist.
cat >"$W/nonexistent_python.sh" <<'EOF'
#!/bin/bash
/nonexistent/python -m x
EOF
PY=$(sub -J nonexistent_python -o "$W/%x-%j.out" "$W/nonexistent_python.sh")

# Environment of a batch job.
cat >"$W/env_job.sh" <<'EOF'
#!/bin/bash
#SBATCH -J env_job
#SBATCH -n 1
#SBATCH -c 2
#SBATCH --mem=1G
#SBATCH -t 00:10:00
env | grep SLURM | sort
EOF
ENVJ=$(sub -o "$W/%x-%j.out" "$W/env_job.sh")

# CANCELLED while running.
X=$(sub -J cancelled_job -o /dev/null --wrap 'sleep 300')
wait_state "$X" 30 RUNNING
scancel "$X"
# PENDING (JobHeldUser).
H=$(sub -J held_job --hold -o /dev/null --wrap 'sleep 10')

wait_state "$C" 30 COMPLETED
wait_state "$F" 30 FAILED
wait_state "$PY" 30 FAILED
wait_state "$ENVJ" 30 COMPLETED

# Field lists: squeue 22.05 has no --helpformat; probe what the binary accepts.
field_ok() {
    local err
    err=$(squeue -h -t all -j "$F" -O "$1" 2>&1 >/dev/null) || { echo "invalid (exit $?)"; return 0; }
    if [[ -z $err ]]; then echo ok; else echo invalid; fi
}
rec squeue_O_invalid_field "invalid -O field: error on stderr, but exit 0" \
    squeue -h -t all -j "$F" -O 'JobID:|,exitcode'
rec squeue_helpformat "option does not exist in 22.05" squeue --helpformat
rec squeue_helpFormat "option does not exist in 22.05" squeue --helpFormat
{
    echo "# squeue -o %<letter> for every letter, for the completed job $C (all letters are accepted)"
    for l in {a..z} {A..Z}; do printf '%%%s\t%s\n' "$l" "$(squeue -h -t all -j "$C" -o "%$l" 2>&1)"; done
} >"$HERE/squeue_o_letters.txt"
printf '| `squeue_o_letters.txt` | `squeue -h -t all -j %s -o %%X` for each letter X | 0 | generated list |\n' "$C" >>"$CASES"
{
    echo "# squeue -O <field> (22.05.8): the -O field names of the squeue(1) man page, each tried on job $F."
    echo "# ok = no error; invalid = stderr 'squeue: error: Invalid job format specification: <field>'"
    echo "# (squeue still exits 0 for an invalid field)."
    zcat /usr/share/man/man1/squeue.1.gz \
        | awk '/^\.TP/ { getline; print }' \
        | sed -n 's/^\\fB\([A-Za-z][A-Za-z0-9_\\-]*\)\\fR.*/\1/p' | sed 's/\\-/-/g' \
        | awk 'done { next } { print } $0 == "WorkDir" { done = 1 }' | awk '!seen[$0]++' | while read -r field; do
            printf '%-20s %s\n' "$field" "$(field_ok "$field")"
        done
    echo "# other spellings tried"
    for field in ExitCode exitcode Exit_Code DerivedExitCode; do
        printf '%-20s %s\n' "$field" "$(field_ok "$field")"
    done
} >"$HERE/squeue_O_fields.txt"
printf '| `squeue_O_fields.txt` | `squeue -h -t all -j %s -O FIELD` for each field of squeue(1) | 0 | generated list |\n' "$F" >>"$CASES"

log "waiting for the timeout job $T to reach TIMEOUT (~80 s after submit)"
wait_state "$T" 180 TIMEOUT

# Fill the node, then queue more.
BIG=$(sub -J big_running -c 16 -o /dev/null --wrap 'sleep 600')
wait_state "$BIG" 30 RUNNING
A2=$(sub -J array_pending --array=0-3 -o /dev/null --wrap 'sleep 600')
P1=$(sub -J pending_1 -c 1 -o /dev/null --wrap 'sleep 600')
P2=$(sub -J pending_2 -c 2 -o /dev/null --wrap 'sleep 600')
# Wait for the scheduler to set the reason of every pending job (held ones have it at once).
for _ in $(seq 100); do
    squeue -h -t pending -o %r | grep -qx None || break
    sleep 0.2
done

LIST=$T,$C,$F,$A1,$MEMFAIL,$PY,$ENVJ,$X,$H,$BIG,$A2,$P1,$P2
rec squeue_mixed_states "ids: timeout=$T completed=$C failed=$F array_done=$A1 badconstraints=$MEMFAIL nonexistent_python=$PY env=$ENVJ cancelled=$X held=$H running=$BIG array_pending=$A2 pending=$P1,$P2" \
    squeue -h -t all -j "$LIST" -o '%i|%T|%r|%j'
rec squeue_mixed_states_r "same with -r (one row per array task)" \
    squeue -h -r -t all -j "$LIST" -o '%i|%T|%r|%j'
rec squeue_mixed_states_exit_code "same jobs, -O with exit_code (last column is padded to 20 chars)" \
    squeue -h -t all -j "$LIST" -O 'JobID:|,State:|,Reason:|,exit_code'
rec squeue_mixed_states_exit_code_sep "same, exit_code with a | suffix (no padding)" \
    squeue -h -t all -j "$LIST" -O 'JobID:|,State:|,Reason:|,exit_code:|'
rec squeue_mixed_states_array_fields "%i=job id (A_T for array tasks), %A=unique job id of each record, %F=array job id, %K=array task id" \
    squeue -h -r -t all -j "$LIST" -o '%i|%A|%F|%K|%T'
rec squeue_mixed_states_array_fields_O "the same through -O" \
    squeue -h -r -t all -j "$LIST" -O 'JobArrayID:|,JobID:|,ArrayJobID:|,ArrayTaskID:|,State:|,exit_code:|'
rec squeue_default_format "default format, default state filter (finished jobs hidden)" squeue -j "$LIST"
rec squeue_finished_without_t_all "finished job $C, no -t all: prints nothing" \
    squeue -h -j "$C" -o '%i|%T|%r|%j'
rec scontrol_show_job_failed "failed job (exit 3)" scontrol show job "$F"
rec scontrol_show_job_timeout "" scontrol show job "$T"
rec scontrol_show_job_pending_array "" scontrol show job "$A2"
rec scontrol_oneline_job_list "several ids, comma separated" scontrol -o show job "$LIST"
rec scontrol_oneline_job_failed "" scontrol -o show job "$F"
rec scontrol_oneline_job_all "all jobs" scontrol -o show job

# 4. invalid ids
rec squeue_invalid_id_alone "999999 never existed" squeue -h -t all -j 999999 -o '%i|%T|%r|%j'
rec squeue_valid_and_invalid_id "valid $C + invalid" squeue -h -t all -j "$C,999999" -o '%i|%T|%r|%j'
rec squeue_invalid_and_valid_id "invalid + valid $C" squeue -h -t all -j "999999,$C" -o '%i|%T|%r|%j'
rec squeue_two_invalid_ids "" squeue -h -t all -j 999998,999999 -o '%i|%T|%r|%j'
rec squeue_list_with_invalid_id "the whole list + 999999" squeue -h -t all -j "$LIST,999999" -o '%i|%T|%r|%j'
rec squeue_invalid_id_default_filter "no -t all" squeue -h -j "$P1,999999" -o '%i|%T|%r|%j'
rec scontrol_show_job_invalid_id "" scontrol show job 999999

# 5. sacct from the jobcomp file
rec sacct_finished "completed=$C failed=$F array_done=$A1 timeout=$T cancelled=$X nonexistent_python=$PY env=$ENVJ badconstraints=$MEMFAIL" \
    sacct -c -P -n -j "$C,$F,$A1,$T,$X,$PY,$ENVJ,$MEMFAIL" -o JobID,JobName,State,ExitCode,Start,End
rec sacct_finished_header "same without -n" \
    sacct -c -P -j "$C,$F,$T,$X" -o JobID,JobName,State,ExitCode,Start,End
rec sacct_unknown_id "" sacct -c -P -n -j 999999 -o JobID,JobName,State,ExitCode,Start,End
rec sacct_no_accounting "sacct without -c: no slurmdbd" sacct -P -n -j "$C" -o JobID,State,ExitCode

# 7./8. job output files
keep job_output_timeout "$W/timeout_job-$T.out" "job $T killed at its time limit"
keep job_output_nonexistent_python "$W/nonexistent_python-$PY.out" "job $PY, script ran /nonexistent/python -m x"
keep job_output_failed "$W/failed_job-$F.out" "job $F, echo failing >&2; exit 3"
keep job_env_slurm_vars "$W/env_job-$ENVJ.out" "job $ENVJ, env | grep SLURM | sort (-n 1 -c 2 --mem=1G -t 00:10:00)"

# 6. scancel
rec scancel_mixed "running=$BIG pending=$P1 finished=$C nonexistent=999999" scancel "$BIG" "$P1" "$C" 999999
wait_state "${A2}_0" 30 RUNNING
rec scancel_mixed_verbose "running=${A2}_0 pending(held)=$H finished=$F nonexistent=999998" \
    scancel -v "${A2}_0" "$H" "$F" 999998
rec scancel_comma_list "comma-separated ids: running array $A2 and pending $P2" scancel "$A2,$P2"
sleep 1
rec squeue_after_scancel "" squeue -h -t all -j "$LIST" -o '%i|%T|%r|%j'

# 4b. purged jobs: restart slurmctld with MinJobAge=5
log "restarting with MinJobAge=5 to purge finished jobs"
SLURM_MIN_JOB_AGE=5 SLURM_CLEAN_STATE=0 "$RUN" start
V=$(sub -J alive_job -o /dev/null --wrap 'sleep 120')
wait_state "$V" 30 RUNNING
for _ in $(seq 600); do
    squeue -h -t all -j "$C" >/dev/null 2>&1 || break
    sleep 0.2
done
log "job $C purged"
rec squeue_purged_alone "job $C purged (slurmctld restarted with MinJobAge=5)" squeue -h -t all -j "$C" -o '%i|%T|%r|%j'
rec squeue_running_and_purged "running $V + purged $C" squeue -h -t all -j "$V,$C" -o '%i|%T|%r|%j'
rec squeue_purged_and_running "purged $C + running $V" squeue -h -t all -j "$C,$V" -o '%i|%T|%r|%j'
rec squeue_all_purged "purged $C,$F,$T" squeue -h -t all -j "$C,$F,$T" -o '%i|%T|%r|%j'
rec sacct_after_purge "the jobcomp file still has them" \
    sacct -c -P -n -j "$C,$F,$T,$X" -o JobID,JobName,State,ExitCode,Start,End
scancel "$V"

# Back to the normal configuration, then stop.
SLURM_CLEAN_STATE=0 "$RUN" start
"$RUN" stop

# README
{
    cat <<'EOF'
# Recorded Slurm 22.05.8 outputs

Real outputs of `sbatch`, `squeue`, `scontrol`, `sacct` and `scancel` from the single-node
cluster of `ci/slurm/run.sh` (Debian 12 packages, node `vm` with 16 CPUs, `EnforcePartLimits=ALL`,
`MinJobAge=300`, `JobCompType=jobcomp/filetxt`), for parser unit tests. Recorded by
`tests/data/slurm/record.sh` as root; `$W` is its work directory `/tmp/slurm-record`.

Each case has `NAME.txt` (exact stdout) and/or `NAME.stderr.txt` (exact stderr). An empty
stream has no file, except that a case that printed nothing at all has an empty `NAME.txt`.
The commands below are shell-quoted, job ids are those of this recording, and `\|` stands for
`|` (markdown table escape).

## What the recording shows

* `squeue -j` with **one** unknown or purged id: exit 1, stderr
  `slurm_load_jobs error: Invalid job id specified`. With **two or more** ids, unknown and purged
  ids are **dropped silently**: exit 0, rows only for the known jobs, and empty output if none is
  known (`squeue_valid_and_invalid_id`, `squeue_two_invalid_ids`, `squeue_running_and_purged`,
  `squeue_all_purged`).
* Without `-t all`, finished jobs are not listed at all (`squeue_finished_without_t_all`: empty,
  exit 0). Rows are sorted by state, not by id or by the order of `-j`.
* `%i` prints `A_T` for array tasks that have their own record and `A_[0-3]` for the still
  pending part of an array (one row without `-r`, one row per task with `-r`); `-O JobArrayID`
  prints the same. `-O JobID` and `%A` print the internal per-task job id instead (`10`, `11`,
  `5` for `5_0`, `5_1`, `5_2`).
* squeue 22.05 has no `--helpformat`. `-O exit_code` exists; it prints the raw wait status:
  `768` = exit 3, `32512` = exit 127, `15` = killed by signal 15 (CANCELLED, TIMEOUT), `1` for the
  BadConstraints job. Without a suffix the last `-O` column is padded with spaces to 20 characters.
  An unknown `-O` field prints `squeue: error: Invalid job format specification: X` on stderr,
  but squeue still exits 0 (`squeue_O_invalid_field`). Step fields (`StepID`, `Nodes`, ...) are
  invalid for jobs (`squeue_O_fields.txt`).
* `scontrol -o show job` takes one id or none; a comma list fails with exit 1.
* `scancel` prints nothing and exits 0 for finished and unknown ids; with `-v` it prints the
  errors but still exits 0.
* `sacct -c` (jobcomp file) gives `ExitCode` as `code:signal` (`3:0`, `127:0`); for array jobs it
  prints `Unknown type ArrayJobId/ArrayTaskId` errors on stderr and still exits 0; rows for
  purged jobs are still there.
* `sbatch --time=abc` exits 255, the other submission errors exit 1. `--mem=100G` is refused but
  still leaves a job record (FAILED, reason BadConstraints, name `wrap`).
* A job killed at its time limit: state TIMEOUT, reason TimeLimit, `scontrol` ExitCode `0:15`,
  and its output file ends with
  `slurmstepd-vm: error: *** JOB N ON vm CANCELLED AT <time> DUE TO TIME LIMIT ***`.

## Cases

| files | command | exit | notes |
|---|---|---|---|
EOF
    cat "$CASES"
} >"$HERE/README.md"
log "done"
