#!/usr/bin/env bash
# GPU throughput on the lent machine (docs/benchmarks.md has the tables these fill), one JSON each into $OUT,
# the least measured first (session 19 measured the two training ones; its generation runs, at 64/32/16 prompts
# with a per-prompt loop over all of them, were cut at their 70 s shares):
#   generate_xl2_R.json  PixArt-XL-2 generation at R = 256 / 512 / 1024 px, bf16: ours vs stock diffusers (a cut
#                        run's JSON holds the modes measured before the cut)
#   train_xl2.json       PixArt-XL-2 training at 256 px, batch 32, bf16, gradient checkpointing, per variant
#   train_demo.json      the demo-gpu PixArt's training step at batch 256, fp32 (what demo-gpu.yaml's size rests on)
# Usage: bash tools/device/bench-gpu.sh [SECONDS, default 560]. SECONDS bounds the whole call: each benchmark gets
# an equal share of what is left; bench.log says which were cut at their share.
# Exit status: 0 every JSON written, 1 some missing, 2 set-up failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
[[ ${1:-560} =~ ^[0-9]+$ ]] || { echo "usage: bench-gpu.sh [SECONDS]" >&2; exit 2; }
total=${1:-560}
source tools/device/env.sh
"$PY" -c "import yaml, json; json.dump(yaml.safe_load(open('workflows/config/demo.yaml'))['train']['recipes']['stage2']['model'], open('/tmp/demo_pixart.json', 'w'))" \
    || exit 2
benchmarks=(
    "generate_xl2_256 -m pixart.bench --arch xl-2 --resolution 256 --dtype bfloat16 --prompts 32 --batch-size 16 --loop-prompts 4 --repeats 3"
    "generate_xl2_512 -m pixart.bench --arch xl-2 --resolution 512 --dtype bfloat16 --prompts 16 --batch-size 8 --loop-prompts 4 --repeats 3"
    "generate_xl2_1024 -m pixart.bench --arch xl-2 --resolution 1024 --dtype bfloat16 --prompts 8 --batch-size 4 --loop-prompts 2 --repeats 3"
    "train_xl2 -m pixart.train.bench --arch xl-2 --resolution 256 --batch-size 32 --dtype bfloat16 --gradient-checkpointing"
    "train_demo -m pixart.train.bench --arch /tmp/demo_pixart.json --batch-size 256 --steps 50 --warmup 10 --dtype float32 --variants adaln-single"
)
missing=0
for k in "${!benchmarks[@]}"; do
    read -r name args <<< "${benchmarks[$k]}"
    share=$(( (total - SECONDS - 10) / (${#benchmarks[@]} - k) ))
    echo "== $name (up to ${share}s): $args" >> "$OUT/bench.log"
    # shellcheck disable=SC2086  # args is one benchmark's argument list, split on purpose
    timeout -k 10 "$share" "$PY" $args --json "$OUT/$name.json" >> "$OUT/bench.log" 2>&1 \
        || echo "== $name: stopped with status $? (124: cut at ${share}s)" >> "$OUT/bench.log"
    [ -f "$OUT/$name.json" ] || missing=$((missing + 1))
done
grep -E "^==|images/s" "$OUT/bench.log"
echo "bench-gpu: $(( ${#benchmarks[@]} - missing )) of ${#benchmarks[@]} benchmarks written to \$OUT"
[ "$missing" = 0 ]
