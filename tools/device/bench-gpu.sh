#!/usr/bin/env bash
# GPU throughput on the lent machine (docs/benchmarks.md has the tables these fill), one JSON each into $OUT:
#   train_demo.json      the demo-gpu PixArt's training step at batch 256, fp32 (what demo-gpu.yaml's size rests on)
#   train_xl2.json       PixArt-XL-2 training at 256 px, batch 32, bf16, gradient checkpointing, per variant
#   generate_xl2_R.json  generation at R = 256 / 512 / 1024 px, bf16: ours vs stock diffusers (pixart.bench)
# Usage: bash tools/device/bench-gpu.sh [SECONDS per benchmark, default 150]. Each benchmark is cut at SECONDS,
# so the call ends inside its 10 minutes with what finished; the log of each is in $OUT/bench.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
limit=${1:-150}
source tools/device/env.sh
"$PY" -c "import yaml, json; json.dump(yaml.safe_load(open('workflows/config/demo.yaml'))['train']['recipes']['stage2']['model'], open('/tmp/demo_pixart.json', 'w'))"
run() {  # NAME COMMAND…
    local name=$1; shift
    echo "== $name: $*" >> "$OUT/bench.log"
    timeout "$limit" "$PY" "$@" --json "$OUT/$name.json" >> "$OUT/bench.log" 2>&1 \
        || echo "== $name: stopped (status $?)" >> "$OUT/bench.log"
}
run train_demo -m pixart.train.bench --arch /tmp/demo_pixart.json --batch-size 256 --steps 50 --warmup 10 \
    --dtype float32 --variants adaln-single
run train_xl2 -m pixart.train.bench --arch xl-2 --resolution 256 --batch-size 32 --dtype bfloat16 --gradient-checkpointing
run generate_xl2_256 -m pixart.bench --arch xl-2 --resolution 256 --dtype bfloat16 --prompts 64 --batch-size 32 --repeats 3
run generate_xl2_512 -m pixart.bench --arch xl-2 --resolution 512 --dtype bfloat16 --prompts 64 --batch-size 16 --repeats 3
run generate_xl2_1024 -m pixart.bench --arch xl-2 --resolution 1024 --dtype bfloat16 --prompts 32 --batch-size 8 --repeats 3
grep -E "^==|images/s" "$OUT/bench.log"
