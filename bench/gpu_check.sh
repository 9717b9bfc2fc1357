#!/usr/bin/env bash
# The GPU check of issue 13, in one call for whoever is lent a CUDA machine (about 8 minutes):
#   1. pytest -m gpu            (the tests marked gpu; they skip where no GPU exists)
#   2. bench/scale.py           (PGD-10 throughput eager/bf16/channels_last/compile/torchattacks,
#                                PGD-AT vs standard steps, compile dynamic vs bucketed shapes)
#   3. bench/pgd_step.py        (PGD-10's step per norm against the K-pass limit, fast-path rows)
# Each part has its own time limit, so one that hangs cannot eat the others' time; a part that
# fails is recorded and the next one still runs. Logs and JSON go to $OUT (a temporary folder when
# unset); summary.json lists every part's exit status and seconds. Exit status: 0 when every part
# passed, 1 when one failed, 2 when there is no CUDA device (nothing is run then).
#
# Run from the repository root:  OUT=/some/dir bash bench/gpu_check.sh
# Options by environment: PYTHON (default python3), TORCHATTACKS_PATH (bench/pgd_step.py and
# bench/scale.py import torchattacks from there; its rows are skipped when absent), SCALE_ARGS
# (extra arguments for bench/scale.py).
set -u -o pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d /tmp/gpu_check.XXXXXX)}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
echo "writing to $OUT"

{ nvidia-smi || true; } > "$OUT/nvidia-smi.txt" 2>&1
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "no CUDA device here: nothing checked" | tee "$OUT/summary.txt"
    exit 2
fi
"$PY" - > "$OUT/environment.json" <<'EOF'
import json, platform, torch
print(json.dumps({
    "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
    "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
    "bf16": torch.cuda.is_bf16_supported(),
}, indent=1))
EOF

declare -A RC SECONDS_OF
part() {  # part NAME LIMIT_S COMMAND...
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    echo "== $name (limit ${limit} s): $*"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    RC[$name]=$?
    SECONDS_OF[$name]=$((SECONDS - t0))
    echo "   rc ${RC[$name]} in ${SECONDS_OF[$name]} s; last lines:"
    tail -n 15 "$OUT/$name.log" | sed 's/^/   /'
}

part pytest_gpu 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider -o addopts="" \
    --junitxml="$OUT/pytest_gpu.xml" tests
# shellcheck disable=SC2086  # SCALE_ARGS is a list of words
part scale 240 "$PY" bench/scale.py --device cuda --width 64 --batch 256 --reps 3 --train-steps 10 \
    --compile-shapes --threads 4 --out "$OUT/scale.json" ${SCALE_ARGS:-}
part pgd_step 90 "$PY" bench/pgd_step.py --device cuda --batch 1024 --reps 5 --warmup 2 --compile \
    --threads 4 --out "$OUT/pgd_step.json"

failed=0
{
    echo "{"
    first=1
    for name in pytest_gpu scale pgd_step; do
        [ $first -eq 1 ] || echo ","
        first=0
        printf '  "%s": {"rc": %s, "seconds": %s}' "$name" "${RC[$name]}" "${SECONDS_OF[$name]}"
        [ "${RC[$name]}" -eq 0 ] || failed=1
    done
    echo
    echo "}"
} > "$OUT/summary.json"
cat "$OUT/summary.json"
exit $failed
