# Sourced by the tools/device scripts on the lent GPU machine: installs the carried wheels (.whl/, from
# tools/device/fetch-wheels.sh) into $SITE once per machine and puts them first on the import path.
# Elsewhere (a dry run on a CPU): PYTHON, WHEELS (.whl) and SITE (/tmp/site) may be set.
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
WHEELS=${WHEELS:-.whl}
OUT=${OUT:?OUT must name the folder whose files come back}
if [ -d "$WHEELS" ] && [ ! -f "$SITE/.installed" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
        || { echo "tools/device: installing the carried wheels from $WHEELS failed" >&2; exit 2; }
    touch "$SITE/.installed"
fi
[ -d "$SITE" ] && export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
mkdir -p "$OUT"
