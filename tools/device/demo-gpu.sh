#!/usr/bin/env bash
# The shapes demo at GPU size (make demo-gpu's DAG) on the lent GPU machine, followed across calls of at most
# 10 minutes each (docs/device.md). Usage, in every call:
#     bash tools/device/demo-gpu.sh SECONDS [EXTRA_CONFIG.yaml …]
# SECONDS bounds the whole call, set-up and copying included. The first call installs the carried wheels
# (tools/device/env.sh) and starts the DAG in a process session of its own, which runs on between calls while the
# machine stays warm (30 s after a call ends). Each call follows the DAG until it ends or SECONDS are nearly
# spent, then copies what there is into $OUT: progress.txt (the last progress line, failed rules, the end of the
# DAG's log), checks.md once written, sample_grid.svg, results.tgz (report tables and figures, training and
# scoring logs and stats, scores; no images, weights or HTML report). With the DAG it starts the shakedown
# (tools/device/shakedown.yaml: the same rules at test size, done in minutes), whose state and failed jobs
# progress.txt and the summary show. EXTRA_CONFIG files merge last (e.g. longer
# training) and count only in the call that starts the DAG; they must keep `results: results-gpu`.
# Exit status: 0 the DAG finished (a later call only copies again); 3 it is still running (call again at once,
# with the same arguments); 1 it failed (see progress.txt; the next call starts it again, and Snakemake keeps
# what is done); 2 set-up failed.
# Elsewhere (a dry run on a CPU): see tools/device/env.sh; ALLOW_CPU=1 needs no CUDA.
set -uo pipefail
cd "$(dirname "$0")/../.."
[[ ${1:-} =~ ^[0-9]+$ ]] || { echo "usage: demo-gpu.sh SECONDS [EXTRA_CONFIG.yaml …]" >&2; exit 2; }
budget=$1
shift
COPY_SECONDS=20  # kept for copying the results at the end of the call
RUN=results-gpu/device
source tools/device/env.sh
mkdir -p "$RUN"

# The wrapper writes `ended`, then `rc`; a DAG whose process is gone without an rc was killed.
alive() {  # the process in pid file $1; a zombie (killed, not yet reaped by whoever inherited it) counts as gone
    local state
    state=$(awk '{print $3}' "/proc/$(cat "$1")/stat" 2>/dev/null) && [ "$state" != Z ]
}
mark_if_killed() {
    [ -f "$RUN/pid" ] && [ ! -f "$RUN/rc" ] && ! alive "$RUN/pid" && { date +%s > "$RUN/ended"; echo 137 > "$RUN/rc"; }
    return 0
}
shakedown_running() { [ -f "$RUN/shakedown.pid" ] && [ ! -f "$RUN/shakedown.rc" ] && alive "$RUN/shakedown.pid"; }
shakedown_summary() {  # one line on the shakedown, then its failed rules
    [ -f "$RUN/shakedown.pid" ] || return 0
    local state
    if [ -f "$RUN/shakedown.rc" ]; then state="ended with status $(cat "$RUN/shakedown.rc")"
    elif shakedown_running; then state="running, $(grep -E "steps \([0-9]+%\) done" "$RUN/shakedown.log" | tail -1)"
    else state="killed"; fi
    echo "shakedown (demo.yaml's DAG at test size, into results/): $state"
    grep -E "^Error in rule" "$RUN/shakedown.log" | sort | uniq -c | sed 's/^ */    shakedown: /'
}
printf -v py '%q' "$PY"  # quoted for the `bash -c` command lines below
mark_if_killed
if [ -f "$RUN/rc" ] && [ "$(cat "$RUN/rc")" != 0 ]; then  # a failed DAG starts again; Snakemake keeps what is done
    started=$(cat "$RUN/started")
    mv "$RUN/dag.log" "$RUN/dag.$started.log"
    rm -f "$RUN/pid" "$RUN/rc" "$RUN/started" "$RUN/ended"
    rm -rf .snakemake/locks  # a killed Snakemake leaves its lock; no DAG of this folder runs now
fi

if [ ! -f "$RUN/pid" ]; then
    "$PY" -c "import diffusers, open_clip, cleanfid, snakemake, transformers, torch
import sys, os
cuda = torch.cuda.is_available()
print('demo-gpu: torch', torch.__version__, '| CUDA', torch.cuda.get_device_name(0) if cuda else 'none',
      '| diffusers', diffusers.__version__, '| transformers', transformers.__version__, '| snakemake', snakemake.__version__)
sys.exit(0 if cuda or os.environ.get('ALLOW_CPU') == '1' else 'demo-gpu: torch sees no CUDA device')" || exit 2
    df -h /dev/shm | tail -1 | awk '{print "demo-gpu: /dev/shm " $2 " (loader workers pass batches through it)"}'
    configs=(workflows/config/demo.yaml workflows/config/demo-gpu.yaml "$@")
    printf -v quoted '%q ' "${configs[@]}"
    # greedy scheduling: the ILP scheduler needs pulp, which is not carried. --keep-going: a failed job stops only
    # what depends on it; without it Snakemake schedules nothing new (session 19: one failed score left stage 2
    # training alone, stage 3 and every other cell unscheduled)
    dag="$py -m snakemake --profile workflows/profiles/local --scheduler greedy --keep-going --configfile $quoted"
    report="$py -m snakemake --configfile $quoted --report results-gpu/report.html"
    date +%s > "$RUN/started"
    setsid bash -c "$dag && $report; status=\$?; date +%s > $RUN/ended; echo \$status > $RUN/rc.new; mv $RUN/rc.new $RUN/rc" \
        > "$RUN/dag.log" 2>&1 < /dev/null &
    echo $! > "$RUN/pid"
    echo "demo-gpu: started the DAG (pid $(cat "$RUN/pid")) with ${configs[*]}"
fi

# The shakedown (tools/device/shakedown.yaml): the same rules at test size, at low priority on 4 cores, into
# results/, with --nolock (a locking Snakemake removes every lock of the folder on exit, the DAG's too). It ends
# within minutes and names what fails on this machine's packages or on CUDA while the DAG above still trains. It
# starts with the DAG, and again in each call after it failed (only its failed jobs run again), so a fix made
# meanwhile is confirmed here before the DAG's own failed jobs run again.
if [ -f "$RUN/started" ] && ! shakedown_running && [ "$(cat "$RUN/shakedown.rc" 2>/dev/null)" != 0 ]; then
    printf -v smoke '%q ' workflows/config/demo.yaml tools/device/shakedown.yaml
    rm -f "$RUN/shakedown.rc"
    setsid nice -n 10 bash -c "$py -m snakemake --profile workflows/profiles/local --scheduler greedy \
        --keep-going --nolock --cores 4 --configfile $smoke && $py -m snakemake --nolock --configfile $smoke \
        --report results/report.html; echo \$? > $RUN/shakedown.rc.new; mv $RUN/shakedown.rc.new $RUN/shakedown.rc" \
        > "$RUN/shakedown.log" 2>&1 < /dev/null &
    echo $! > "$RUN/shakedown.pid"
fi

while [ ! -f "$RUN/rc" ] && [ $((SECONDS + 5 + COPY_SECONDS)) -le "$budget" ]; do
    sleep 5
    mark_if_killed
done
rc=$(cat "$RUN/rc" 2>/dev/null)  # read once: what is copied below is at least this far

elapsed=$(( $(cat "$RUN/ended" 2>/dev/null || date +%s) - $(cat "$RUN/started") ))
summary="elapsed since the DAG started: ${elapsed}s
$(grep -E "steps \([0-9]+%\) done" "$RUN/dag.log" | tail -1)
$(grep -E "^Error in rule" "$RUN/dag.log" | sort | uniq -c)
$(shakedown_summary)"
{
    echo "$summary"
    echo "--- last lines of the DAG's log"
    tail -n 80 "$RUN/dag.log"
    if grep -qE "^Error in rule" "$RUN/shakedown.log" 2>/dev/null; then
        echo "--- the shakedown's failed jobs (results-gpu/device/shakedown.log)"
        grep -E -A 60 "^Error in rule" "$RUN/shakedown.log" | head -n 400
    fi
} > "$OUT/progress.txt"
[ -f results-gpu/report/tables/checks.md ] && cp results-gpu/report/tables/checks.md "$OUT/checks.md"
grid=$(ls results-gpu/report/figures/grid__pixart-shapes__fid_cfg__*.svg 2>/dev/null | head -1)
[ -n "$grid" ] && cp "$grid" "$OUT/sample_grid.svg"
tar czf "$OUT/results.tgz" --exclude='*.png' --exclude='*.safetensors' --exclude='*.pth' --exclude='*.bin' \
    --exclude='*.pt' --exclude='results-gpu/train/*/checkpoints' --exclude='results-gpu/samples' \
    --exclude='results-gpu/shapes' --exclude='results-gpu/report.html' --exclude='grid__*.svg' \
    --exclude='worst__*.svg' results-gpu 2> "$RUN/tar.err"
[ $? -le 1 ] || echo "demo-gpu: packing results.tgz failed: $(tail -1 "$RUN/tar.err")"  # 1: a file changed while read
[ "$(stat -c %s "$OUT/results.tgz" 2>/dev/null || echo 0)" -lt $((16 << 20)) ] \
    || echo "demo-gpu: results.tgz is over 16 MiB and will not come back; exclude more in tools/device/demo-gpu.sh"
echo "$summary"
if [ -z "$rc" ]; then
    echo "demo-gpu: still running after ${elapsed}s; call again at once with the same arguments"
    exit 3
fi
echo "demo-gpu: the DAG ended with status $rc after ${elapsed}s"
[ "$rc" = 0 ] || exit 1
