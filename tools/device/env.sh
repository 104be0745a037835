# Sourced by the tools/device scripts on the lent GPU machine: installs the carried wheels (.whl/, from
# tools/device/fetch-wheels.sh) into $SITE once per set of wheels and puts them first on the import path.
# Elsewhere (a dry run on a CPU): PYTHON, WHEELS (.whl) and SITE (/tmp/site) may be set. Set-up errors exit 2.
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/site}
WHEELS=${WHEELS:-.whl}
[ -n "${OUT:-}" ] || { echo "tools/device: OUT must name the folder whose files come back" >&2; exit 2; }
mkdir -p "$OUT"
if compgen -G "$WHEELS/*.whl" > /dev/null; then
    wanted=$(ls "$WHEELS"/*.whl | xargs -n1 basename | sort | sha1sum | cut -c1-16)
    if [ "$(cat "$SITE/.installed" 2>/dev/null)" != "$wanted" ]; then  # a new carried set replaces the old one
        rm -rf "$SITE"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$WHEELS"/*.whl \
            || { echo "tools/device: installing the carried wheels from $WHEELS failed" >&2; exit 2; }
        echo "$wanted" > "$SITE/.installed"
    fi
elif [ ! -f "$SITE/.installed" ]; then
    echo "tools/device: no wheels in $WHEELS and none installed in $SITE: run tools/device/fetch-wheels.sh here and" \
         "carry .whl (run(carry=[\".whl\"], …)); the suite's imports may fail" >&2
fi
[ -d "$SITE" ] && export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
