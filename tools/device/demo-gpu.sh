#!/usr/bin/env bash
# The shapes demo at GPU size (make demo-gpu's DAG) on the lent GPU machine, followed across calls of at most
# 10 minutes each (docs/device.md). Usage, in every call:
#     bash tools/device/demo-gpu.sh SECONDS [EXTRA_CONFIG.yaml …]
# The first call installs the carried wheels (.whl/, from tools/device/fetch-wheels.sh) into /tmp/site and starts
# the DAG in a process session of its own, which runs on between calls while the machine stays warm (30 s after
# a call ends). Each call follows the DAG for up to SECONDS, then copies what it has into $OUT: progress.txt (the
# DAG's log, last lines), checks.md once written, results.tgz (report tables and figures, training logs and
# stats, scores; no images or checkpoints). EXTRA_CONFIG files merge last (e.g. longer training); they only count
# in the call that starts the DAG.
# Exit status: 0 the DAG finished; 3 it is still running (call again at once, with the same arguments);
# 1 it failed (see progress.txt); 2 set-up failed.
# Elsewhere (a dry run on a CPU): see tools/device/env.sh; ALLOW_CPU=1 needs no CUDA.
set -uo pipefail
cd "$(dirname "$0")/../.."
budget=${1:?usage: demo-gpu.sh SECONDS [EXTRA_CONFIG.yaml …]}
shift
RUN=results-gpu/device
source tools/device/env.sh
mkdir -p "$RUN"
if [ -f "$RUN/rc" ]; then  # the last DAG ended (a failure, say, since fixed): start again; Snakemake keeps what is done
    mv "$RUN/dag.log" "$RUN/dag.previous.log"
    rm -f "$RUN/pid" "$RUN/rc" "$RUN/started" "$RUN/ended"
fi

if [ ! -f "$RUN/pid" ]; then
    "$PY" -c "import diffusers, open_clip, cleanfid, snakemake, transformers, torch
import sys, os
cuda = torch.cuda.is_available()
print('demo-gpu: torch', torch.__version__, '| CUDA', torch.cuda.get_device_name(0) if cuda else 'none',
      '| diffusers', diffusers.__version__, '| transformers', transformers.__version__, '| snakemake', snakemake.__version__)
sys.exit(0 if cuda or os.environ.get('ALLOW_CPU') == '1' else 'demo-gpu: torch sees no CUDA device')" || exit 2
    configs=(workflows/config/demo.yaml workflows/config/demo-gpu.yaml "$@")
    # greedy scheduling: the ILP scheduler needs pulp, which is not carried
    dag="'$PY' -m snakemake --profile workflows/profiles/local --scheduler greedy --configfile ${configs[*]}"
    report="'$PY' -m snakemake --configfile ${configs[*]} --report results-gpu/report.html"
    date +%s > "$RUN/started"
    setsid bash -c "$dag && $report; echo \$? > '$RUN/rc'; date +%s > '$RUN/ended'" > "$RUN/dag.log" 2>&1 < /dev/null &
    echo $! > "$RUN/pid"
    echo "demo-gpu: started the DAG (pid $(cat "$RUN/pid")) with ${configs[*]}"
fi

deadline=$((SECONDS + budget))
while [ ! -f "$RUN/rc" ] && [ $SECONDS -lt $deadline ]; do
    sleep 5
done

elapsed=$(( $(cat "$RUN/ended" 2>/dev/null || date +%s) - $(cat "$RUN/started") ))
{ echo "elapsed since the DAG started: ${elapsed}s"; grep -E "steps \([0-9]+%\) done" "$RUN/dag.log" | tail -1
  grep -E "^Error in rule" "$RUN/dag.log" | sort | uniq -c
  echo "--- last lines of the DAG's log"; tail -n 80 "$RUN/dag.log"; } > "$OUT/progress.txt"
[ -f results-gpu/report/tables/checks.md ] && cp results-gpu/report/tables/checks.md "$OUT/checks.md"
grid=$(ls results-gpu/report/figures/grid__pixart-shapes__fid_cfg__*.svg 2>/dev/null | head -1)
[ -n "$grid" ] && cp "$grid" "$OUT/sample_grid.svg"
# a file comes back only under 16 MiB: no images, weights or the HTML report (which embeds the images)
tar czf "$OUT/results.tgz" --ignore-failed-read --exclude='*.png' --exclude='*.safetensors' --exclude='*.pth' \
    --exclude='*.bin' --exclude='*.pt' --exclude='checkpoints' --exclude='samples' --exclude='shapes' \
    --exclude='report.html' --exclude='grid__*.svg' --exclude='worst__*.svg' results-gpu 2>/dev/null
sed -n "1,/^--- last lines/p" "$OUT/progress.txt" | head -n -1
if [ ! -f "$RUN/rc" ]; then
    echo "demo-gpu: still running after ${elapsed}s; call again at once with the same arguments"
    exit 3
fi
rc=$(cat "$RUN/rc")
echo "demo-gpu: the DAG ended with status $rc after ${elapsed}s"
[ "$rc" = 0 ] || exit 1
