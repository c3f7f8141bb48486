#!/usr/bin/env bash
# Re-records the SGE outputs in this directory. Needs a cell started by ci/sge/run.sh start,
# run as root, with a normal user "sgetest" (created when missing). Takes about 3 minutes.
# Each recording NAME gets NAME.txt (stdout) and, when not empty, NAME.stderr.txt; the command
# lines and exit codes go to manifest.tsv, from which README.md's table is made.
set -euo pipefail
trap 'rc=$?; echo "record.sh: line $LINENO: \"$BASH_COMMAND\" failed (rc=$rc)" >&2' ERR

OUT="$(cd "$(dirname "$0")" && pwd)"
W=/tmp/sgerec
rm -rf "$W"; mkdir -p "$W"; chmod 1777 "$W"; cd "$W"
: > "$OUT/manifest.tsv"
id sgetest >/dev/null 2>&1 || useradd -m -s /bin/bash sgetest

now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2f", b - a}'; }
note() { echo "== $*" >&2; }

# rec NAME 'COMMAND' [USER]: run COMMAND with bash -c in $W, keep stdout/stderr/rc
rec() {
    local name="$1" cmd="$2" user="${3:-root}" rc=0
    if [[ "$user" == root ]]; then
        bash -c "$cmd" > "$OUT/$name.txt" 2> "$OUT/$name.stderr.txt" || rc=$?
    else
        runuser -u "$user" -- bash -c "cd $W && $cmd" > "$OUT/$name.txt" 2> "$OUT/$name.stderr.txt" || rc=$?
    fi
    [[ -s "$OUT/$name.stderr.txt" ]] || rm -f "$OUT/$name.stderr.txt"
    printf '%s\t%s\t%s\t%s\n' "$name" "$user" "$cmd" "$rc" >> "$OUT/manifest.tsv"
    note "$name rc=$rc"
}
# wait_until SECONDS COMMAND...
wait_until() {
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < deadline )) || { echo "timeout: $*" >&2; return 1; }
        sleep 0.2
    done
}
state_is() { qstat -u '*' | awk -v id="$1" -v st="$2" '$1==id && $5==st {ok=1} END {exit !ok}'; }
running_count() { [[ "$(qstat -u '*' -s r | awk 'NR>2' | wc -l)" -ge "$1" ]]; }
gone() { ! qstat -j "$1" >/dev/null 2>&1; }
in_qacct() { qacct -j "$1" >/dev/null 2>&1; }

cat > job.sh <<'EOF'
#!/bin/bash
#$ -N job
#$ -cwd
#$ -j y
echo "job $JOB_ID on $(hostname)"
EOF
cat > long.sh <<'EOF'
#!/bin/bash
#$ -cwd
#$ -j y
sleep 600
EOF
chmod 644 job.sh long.sh

# ---- 1. qsub outputs
rec qsub_plain 'qsub job.sh'
rec qsub_terse 'qsub -terse job.sh'
rec qsub_terse_array 'qsub -terse -t 1-3 job.sh'
FINISHED_ID="$(tr -dc 0-9 < "$OUT/qsub_terse.txt")"

# ---- 2. qsub errors
rec qsub_err_unknown_queue 'qsub -q nosuch.q job.sh'
rec qsub_err_bad_h_rt 'qsub -l h_rt=abc job.sh'
rec qsub_err_unknown_resource 'qsub -l foo=1 job.sh'
rec qsub_err_unknown_pe 'qsub -pe nope 2 job.sh'
rec qsub_err_unsatisfiable_pe_w_e 'qsub -w e -pe smp 999 job.sh'
rec qsub_unsatisfiable_pe_accepted 'qsub -pe smp 999 -N bigpe long.sh'
BIGPE_ID="$(sed -n 's/^Your job \([0-9]*\) .*/\1/p' "$OUT/qsub_unsatisfiable_pe_accepted.txt")"
rec qsub_err_missing_script 'qsub /nonexistent/job.sh'
rec qsub_err_bad_option 'qsub --bogus job.sh'

# ---- 3. many jobs in mixed states
wait_until 30 gone "$FINISHED_ID"
ARRAY_RUN="$(qsub -terse -q all.q -N arr_run -t 1-3 long.sh | cut -d. -f1)"
FILL=()
for i in 1 2 3 4 5; do FILL+=("$(qsub -terse -q all.q -N fill$i long.sh)"); done
wait_until 30 running_count 8
SUSP="${FILL[4]}"; qmod -sj "$SUSP" >/dev/null
PEND1="$(qsub -terse -q all.q -N pend1 long.sh)"
PEND2="$(qsub -terse -q all.q -N pend2 -pe smp 2 long.sh)"
ARRAY_PEND="$(qsub -terse -q all.q -N arr_pend -t 1-5:2 long.sh | cut -d. -f1)"
HELD="$(qsub -terse -h -N held long.sh)"
MEM="$(qsub -terse -N bigmem -l mem_free=1000G long.sh)"
USER_RUN="$(runuser -u sgetest -- bash -c "cd $W && qsub -terse -q short.q -N userrun long.sh")"
USER_PEND="$(runuser -u sgetest -- bash -c "cd $W && qsub -terse -q all.q -N userpend long.sh")"
wait_until 30 state_is "$USER_RUN" r
ERR="$(qsub -terse -q short.q -N badout -o /nonexistent/dir/out long.sh)"
wait_until 30 state_is "$ERR" Eqw
wait_until 30 state_is "$SUSP" s
sleep 2   # one more scheduling run so that the pending reasons are current
rec qstat_xml_mixed 'qstat -xml'
rec qstat_xml_mixed_all_users "qstat -xml -u '*'"
rec qstat_mixed_all_users "qstat -u '*'"
rec qstat_xml_j_unsatisfiable_pe "qstat -xml -j $BIGPE_ID"
rec qstat_j_unsatisfiable_pe "qstat -j $BIGPE_ID"
rec qstat_xml_j_unsatisfiable_mem "qstat -xml -j $MEM"
rec qstat_j_unsatisfiable_mem "qstat -j $MEM"
rec qstat_xml_j_error "qstat -xml -j $ERR"
rec qstat_j_error "qstat -j $ERR"
rec qstat_xml_j_running_array "qstat -xml -j $ARRAY_RUN"
rec qstat_xml_j_missing 'qstat -xml -j 99999'
# the same pending job with the scheduler's job info switched off (the SGE default)
qconf -ssconf > sched.orig
sed -E 's/^(schedd_job_info)[[:space:]].*/\1 false/' sched.orig > sched.off
qconf -Msconf sched.off >/dev/null 2>&1
sleep 2.5
rec qstat_j_schedd_job_info_false "qstat -j $BIGPE_ID"
rec qstat_xml_j_schedd_job_info_false "qstat -xml -j $BIGPE_ID"
qconf -Msconf sched.orig >/dev/null 2>&1
{
    printf 'role\tjob id\n'
    printf 'running array job, tasks 1-3 (all.q)\t%s\n' "$ARRAY_RUN"
    printf 'running fill1..fill4 (all.q)\t%s\n' "${FILL[*]:0:4}"
    printf 'suspended with qmod -sj (fill5)\t%s\n' "$SUSP"
    printf 'running, user sgetest (short.q)\t%s\n' "$USER_RUN"
    printf 'pending, -pe smp 999 (never fits)\t%s\n' "$BIGPE_ID"
    printf 'pending, queue full (pend1)\t%s\n' "$PEND1"
    printf 'pending, -pe smp 2 (pend2)\t%s\n' "$PEND2"
    printf 'pending array -t 1-5:2\t%s\n' "$ARRAY_PEND"
    printf 'held, qsub -h\t%s\n' "$HELD"
    printf 'pending, -l mem_free=1000G (never fits)\t%s\n' "$MEM"
    printf 'pending, user sgetest\t%s\n' "$USER_PEND"
    printf 'error state Eqw, -o /nonexistent/dir/out\t%s\n' "$ERR"
    printf 'finished before the snapshot (from qsub_terse)\t%s\n' "$FINISHED_ID"
} > "$OUT/mixed_jobs.tsv"
rec qstat_j_missing 'qstat -j 99999'

# ---- 5. qdel of several ids at once: running, pending, finished, nonexistent
rec qdel_several "qdel ${FILL[0]} $PEND1 $FINISHED_ID 99999"
rec qdel_missing 'qdel 99999'
rec qdel_running "qdel ${FILL[1]}"
rec qdel_pending "qdel $PEND2"
rec qdel_other_users_job "qdel $USER_PEND"
rec qdel_all_users "qdel -u '*'"
no_jobs() { [[ -z "$(qstat -u '*')" ]]; }
wait_until 40 no_jobs
rec qstat_xml_empty 'qstat -xml'
rec qstat_empty 'qstat'
# a request that can never be met, on an otherwise idle cluster (all.q offers 8 slots)
PE64="$(qsub -terse -N pe64 -pe smp 64 long.sh)"
sleep 2.5   # let the scheduler run (schedule_interval 1 s) so that the reasons are recorded
rec qstat_xml_j_pe64_idle "qstat -xml -j $PE64"
rec qstat_j_pe64_idle "qstat -j $PE64"
rec qstat_xml_pe64_idle 'qstat -xml'
qdel "$PE64" >/dev/null
wait_until 20 no_jobs

# ---- 4. finished jobs and qacct
cat > exit3.sh <<'EOF'
#!/bin/bash
#$ -cwd
#$ -j y
echo about to exit 3
exit 3
EOF
cat > hrt.sh <<'EOF'
#!/bin/bash
#$ -cwd
#$ -j y
#$ -l h_rt=0:0:5
sleep 60
EOF
OK_ID="$(qsub -terse -N ok job.sh)"
T_SUB="$(now)"
wait_until 30 gone "$OK_ID"
T_GONE="$(now)"
wait_until 60 in_qacct "$OK_ID"
note "job $OK_ID: left qstat $(awk -v a="$T_SUB" -v b="$T_GONE" 'BEGIN{printf "%.2f", b-a}')s after submit, in qacct $(since "$T_GONE")s after that"
echo "exit0 job $OK_ID: left qstat $(awk -v a="$T_SUB" -v b="$T_GONE" 'BEGIN{printf "%.2f", b-a}') s after qsub; qacct found it $(since "$T_GONE") s after it left qstat (accounting_flush_time=00:00:00)" > "$OUT/timings.txt"
rec qstat_xml_finished 'qstat -xml'
rec qstat_xml_j_finished "qstat -xml -j $OK_ID"
rec qacct_exit0 "qacct -j $OK_ID"
E3="$(qsub -terse -N exit3 exit3.sh)"
HRT="$(qsub -terse -N hrt hrt.sh)"
T_HRT="$(now)"
DEL="$(qsub -terse -N deleted long.sh)"
wait_until 30 state_is "$DEL" r
sleep 1
qdel "$DEL" >/dev/null
wait_until 30 in_qacct "$E3"
wait_until 30 in_qacct "$DEL"
wait_until 60 in_qacct "$HRT"
echo "h_rt=0:0:5 job $HRT (sleep 60): found by qacct $(since "$T_HRT") s after qsub" >> "$OUT/timings.txt"
rec qacct_exit3 "qacct -j $E3"
rec qacct_h_rt_killed "qacct -j $HRT"
rec qacct_qdel_running "qacct -j $DEL"
rec qacct_missing 'qacct -j 99999'
rec qacct_qdel_pending "qacct -j $PEND1"   # deleted while pending: it never ran

# ---- 6. job output of a failing command; environment inside a job
cat > badpython.sh <<'EOF'
#!/bin/bash
#$ -N badpython
#$ -j y
#$ -cwd
/nonexistent/python -m x
EOF
cat > env.sh <<'EOF'
#!/bin/bash
#$ -N envjob
#$ -j y
#$ -cwd
#$ -pe smp 2
env | grep -E 'JOB_ID|SGE|NSLOTS|TMPDIR|QUEUE' | sort
EOF
BP="$(qsub -terse badpython.sh)"
EV="$(qsub -terse env.sh)"
wait_until 30 in_qacct "$BP"
wait_until 30 in_qacct "$EV"
cp "badpython.o$BP" "$OUT/job_output_nonexistent_python.txt"
printf 'job_output_nonexistent_python\troot\t(file badpython.o%s of: qsub badpython.sh)\t-\n' "$BP" >> "$OUT/manifest.tsv"
cp "envjob.o$EV" "$OUT/job_env.txt"
printf 'job_env\troot\t(file envjob.o%s of: qsub env.sh)\t-\n' "$EV" >> "$OUT/manifest.tsv"
rec qacct_nonexistent_python "qacct -j $BP"
for f in job.sh long.sh exit3.sh hrt.sh badpython.sh env.sh; do cp "$f" "$OUT/script_$f.txt"; done
python3 "$OUT/make_readme_table.py"
note "recording finished"
