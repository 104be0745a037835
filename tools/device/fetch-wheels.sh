#!/usr/bin/env bash
# Downloads the wheels tools/device/wheels.txt names, built for the lent GPU machine's Python (CPython 3.12,
# x86-64 manylinux), into .whl/ (git-ignored), to be carried there: run(carry=[".whl"], …). Run it here, on the
# CPU machine, where the package registries are reachable. A package published only as source is built into a
# wheel here, which must then be pure Python. Older wheels in .whl/ are removed first: two versions of one
# package stop the install there.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
TARGET=(--python-version 3.12 --implementation cp)
for tag in manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 \
           manylinux2014 manylinux1; do
    TARGET+=(--platform "${tag}_x86_64")
done
requirements=$(sed 's/#.*//' tools/device/wheels.txt | grep -E '\S' | tr -d ' ')
mkdir -p .whl
rm -f .whl/*.whl
normal() { tr 'A-Z.-' 'a-z__'; }  # a wheel's file name spells its project name this way, in any case
for requirement in $requirements; do
    if ! "$PY" -m pip download --quiet --no-deps --only-binary=:all: "${TARGET[@]}" -d .whl "$requirement" \
            >/dev/null 2>&1; then
        "$PY" -m pip wheel --quiet --no-deps -w .whl "$requirement" 2>&1 | { grep -v "^WARNING: Location" || true; } \
            || { echo "fetch-wheels: $requirement: neither a wheel for CPython 3.12 x86-64 nor a source to build" >&2
                 exit 1; }
        name=$(echo "${requirement%%==*}" | normal)
        built=$(ls .whl | while read -r file; do [ "$(echo "${file%%-*}" | normal)" = "$name" ] && echo "$file"; done)
        case "$built" in
            *-py3-none-any.whl) ;;
            *) echo "fetch-wheels: $requirement has no wheel for CPython 3.12 x86-64 and is not pure Python" \
                    "(built: ${built:-nothing}); find another version or build it on the GPU machine" >&2
               exit 1 ;;
        esac
    fi
done
count=$(ls .whl/*.whl | wc -l)
expected=$(echo "$requirements" | wc -w)
if [ "$count" -ne "$expected" ]; then
    echo "fetch-wheels: $count wheels in .whl/ for $expected requirements" >&2
    exit 1
fi
echo "fetch-wheels: $count wheels, $(du -sh .whl | cut -f1) in .whl/ (the working tree that travels must stay under 64 MiB)"
