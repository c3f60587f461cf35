#!/usr/bin/env bash
# nanoGPT's CPU recipe on Tiny Shakespeare, character level (here: byte level,
# the same thing for ASCII text). nanoGPT reports val loss ~1.88 after 2000 steps.
# Its model has no biases (nanoGPT's default bias=False), so neither has this one.
#
#   bench/shakespeare_cpu.sh [DATA] [extra train.py flags...]
#   NPROC=2 bench/shakespeare_cpu.sh     # data-parallel: mpiexec -n 2, one BLAS thread per rank
#   PRESET=llama-nano bench/shakespeare_cpu.sh   # the same size as a Llama: RoPE, SwiGLU, RMSNorm,
#                                                # 4 query heads over 2 key/value heads, untied head
#
#   BENCH_QUICK=1 bench/shakespeare_cpu.sh       # seconds: a made-up text, a tiny model, a few steps
#
# DATA defaults to ../shared/data/tinyshakespeare.txt, relative to the repo root.
# --batch-size 12 is the whole step's batch at any NPROC (6 rows per rank with 2).
# Prints the final val loss, the wall time and the mean training tokens/s.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/tinyshakespeare.txt}
shift || true
PRESET=${PRESET:-nano}
OUT=${OUT:-out/shakespeare_cpu_$PRESET}
# the quick mode: the same run, a tiny configuration (later flags override the ones before them)
QUICK=()
if [ "${BENCH_QUICK:-}" = 1 ]; then
    mkdir -p "$OUT"
    [ "$DATA" = ../shared/data/tinyshakespeare.txt ] && DATA=$OUT/quick_text.txt
    python -c "print('To be, or not to be, that is the question. ' * 200)" > "$OUT/quick_text.txt"
    QUICK=(--n-layer 1 --n-embd 16 --n-head 2 --block-size 16 --max-iters 3 --lr-decay-iters 3 --warmup-iters 1
           --eval-interval 3 --eval-iters 1 --sample-tokens 4 --peak-flops 1e9)
fi
if [ ! -f "$DATA" ]; then
    echo "no Tiny Shakespeare at $DATA: pass its path as the first argument" >&2
    exit 1
fi
rm -rf "$OUT/ckpt" "$OUT/metrics.jsonl"   # a fresh run each time; the tokenized data stays cached

LAUNCH=()
if [ "${NPROC:-1}" -gt 1 ]; then
    LAUNCH=(mpiexec -n "$NPROC")
fi
start=$(date +%s)
"${LAUNCH[@]}" python train.py --data "$DATA" --tokenizer bytes --out "$OUT" \
    --preset "$PRESET" --n-layer 4 --n-head 4 --n-embd 128 --block-size 64 --batch-size 12 --no-bias \
    --max-iters 2000 --lr-decay-iters 2000 --dropout 0.0 --lr 1e-3 --min-lr 1e-4 --beta2 0.99 \
    --warmup-iters 100 --weight-decay 0.1 --grad-clip 1.0 --eval-interval 250 --eval-iters 20 "${QUICK[@]}" "$@"
end=$(date +%s)

python - "$OUT/metrics.jsonl" "$((end - start))" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
final = [r for r in rows if "val_loss" in r][-1]
steps = [r for r in rows if "loss" in r]
print(f"final val loss {final['val_loss']:.4f} at step {final['step']} (nanoGPT, GPT-2 style: ~1.88); "
      f"train loss {final['train_loss']:.4f}")
print(f"wall time {sys.argv[2]} s (evaluations included); "
      f"{sum(r['tokens_per_s'] for r in steps) / len(steps):,.0f} training tokens/s on average")
PY
