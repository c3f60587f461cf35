#!/usr/bin/env bash
# The whole GPU check in one call: what the device is, the cuda tests with the real CuPy, the rest of the
# suite, a short training run on the GPU with a resume, two MPI ranks on the one GPU, then bench/gpu.py.
#
#   bash bench/gpu_check.sh                          # on the GPU machine, from the repo's root
#   BENCH_QUICK=1 bash bench/gpu_check.sh            # seconds: a few tests, tiny runs, the bench's quick mode
#
# Each stage's log and a summary go to $OUT (the device runner sets it; default ./gpu-check-out): at most
# eight files, as the runner brings back. Each stage is bounded in time (STAGE_SECONDS_<name> overrides one)
# so the whole fits in 8 minutes, and a failing stage never stops the next. Without a real CuPy, the strict
# CPU stand-in (../shared/tools/strict-cupy, or CUPY_STAND_IN=DIR) takes its place, so the script's every
# line runs on a CPU too; a real GPU's figures come only from a real CuPy. Python packages missing on the
# device machine can travel as wheels in .whl/ (see the device runner's notes): they are installed first.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=${OUT:-$REPO/gpu-check-out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
QUICK=${BENCH_QUICK:-0}
export PYTHONUNBUFFERED=1 PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

say() { echo "$*" | tee -a "$SUMMARY"; }

# stage NAME SECONDS COMMAND...: run COMMAND with its output in $OUT/NAME.log, bounded by SECONDS
stage() {
    local name=$1 seconds=$2
    shift 2
    local override="STAGE_SECONDS_${name//-/_}"
    seconds=${!override:-$seconds}
    local log="$OUT/$name.log" start=$SECONDS rc
    echo "== $name (at most ${seconds}s)"
    echo "\$ $*" >"$log"
    timeout --kill-after=10 "$seconds" bash -c "$*" >>"$log" 2>&1
    rc=$?
    local status=ok
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status="TIMEOUT after ${seconds}s"; elif [ $rc -ne 0 ]; then status="FAILED (exit $rc)"; fi
    say "$(printf '%-12s %-24s %4ss  %s' "$name" "$status" $((SECONDS - start)) "$(tr '\r' '\n' <"$log" | grep -av '^\s*$' | tail -n 1 | cut -c1-100)")"
}

skip() { say "$(printf '%-12s %-24s %4ss  %s' "$1" "skipped" 0 "$2")"; }

# wheels carried to a machine that lacks a package
if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

CUPY_KIND=real
if ! "$PY" -c "import cupy; assert cupy.cuda.runtime.getDeviceCount() > 0" >/dev/null 2>&1; then
    stand_in=${CUPY_STAND_IN:-$REPO/../shared/tools/strict-cupy}
    if [ -d "$stand_in" ]; then
        export PYTHONPATH="$(cd "$stand_in" && pwd):$PYTHONPATH"
        CUPY_KIND="the strict CPU stand-in ($stand_in): no GPU figure below means anything"
    else
        CUPY_KIND=none
    fi
fi
say "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?') quick=$QUICK cupy: $CUPY_KIND"

stage device 30 "(nvidia-smi || echo 'nvidia-smi: not here'); $PY - <<'EOF'
import platform, numpy
print('python', platform.python_version(), 'numpy', numpy.__version__)
try:
    import cupy
    rt = cupy.cuda.runtime
    print('cupy', cupy.__version__, 'devices', rt.getDeviceCount())
    print('driver', rt.driverGetVersion(), 'runtime', rt.runtimeGetVersion())
except Exception as e:
    print('cupy: unavailable or a stand-in:', type(e).__name__, e)
for name in ('torch', 'transformers', 'mpi4py', 'gguf'):
    try:
        m = __import__(name)
        extra = f' cuda={m.cuda.is_available()}' if name == 'torch' else ''
        print(name, getattr(m, '__version__', '?') + extra)
    except ImportError:
        print(name, 'not installed')
EOF"

if [ "$CUPY_KIND" = none ]; then
    skip cuda-tests "no CuPy and no stand-in"
elif [ "$QUICK" = 1 ]; then
    stage cuda-tests 120 "HYPOTHESIS_PROFILE=smoke $PY -m pytest -q -p no:cacheprovider -m 'cuda and not slow' tests/test_engine.py"
else
    stage cuda-tests 150 "$PY -m pytest -q -p no:cacheprovider -m 'cuda and not slow'"
fi

if [ "$QUICK" = 1 ]; then
    skip suite "quick mode: the cpu suite runs in CI"
else
    workers=$("$PY" -c "import xdist" >/dev/null 2>&1 && echo "-n 8" || echo "")
    stage suite 80 "$PY -m pytest -q -p no:cacheprovider -m 'not cuda and not slow' $workers"
fi

# a short run on the GPU, then a resume from its last checkpoint
RUN=$(mktemp -d)
"$PY" -c "
import sys
words = 'the quick brown fox jumps over the lazy dog while seven wise owls count the stars'.split()
with open(sys.argv[1], 'w') as f:
    for i in range(400):
        f.write(' '.join(words[(i * k) % len(words)] for k in range(1, 13)) + '.\n')
" "$RUN/corpus.txt"
TINY="--preset nano --n-layer 2 --n-head 2 --n-embd 32 --block-size 32 --batch-size 8 --tokenizer bytes \
--eval-iters 2 --eval-interval 10 --sample-tokens 8 --warmup-iters 2 --data $RUN/corpus.txt --device cuda"
ITERS=(20 30 10)
[ "$QUICK" = 1 ] && ITERS=(4 6 2)
if [ "$CUPY_KIND" = none ]; then
    skip train "no CuPy and no stand-in"
else
    stage train 60 "$PY train.py $TINY --max-iters ${ITERS[0]} --out $RUN/out && $PY train.py $TINY --max-iters ${ITERS[1]} --out $RUN/out --resume \
        && ls $RUN/out/ckpt && echo 'train + resume on cuda: ok'"
fi

if [ "$CUPY_KIND" = none ]; then
    skip mpi "no CuPy and no stand-in"
elif ! command -v mpiexec >/dev/null || ! "$PY" -c "import mpi4py.MPI" >/dev/null 2>&1; then
    skip mpi "mpiexec or mpi4py is not installed here"
else
    mpi_flags=$(mpiexec --version 2>&1 | grep -q "Open MPI" && echo "--allow-run-as-root --oversubscribe" || echo "")
    stage mpi 60 "mpiexec $mpi_flags -n 2 $PY train.py $TINY --max-iters ${ITERS[2]} --out $RUN/mpi && echo '2 ranks on one GPU: ok'"
fi

stage bench 150 "$PY bench/gpu.py"
rm -rf "$RUN"
say "logs: $OUT"
