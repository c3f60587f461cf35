#!/usr/bin/env bash
# Instruction tuning (book chapter 7) on the Alpaca-format instruction set.
#
#   bench/finetune_instruct.sh [DATA]        pretrain a small GPT briefly on Tiny Shakespeare, then instruction-tune it
#   INIT=DIR bench/finetune_instruct.sh      start from a checkpoint instead (ours, or a Hugging Face GPT-2 folder
#                                            with vocab.json + merges.txt: the book's setting; slow on a CPU)
#   BENCH_QUICK=1 bench/finetune_instruct.sh seconds: made-up instructions, a tiny model, a few steps (no ../shared)
#
# Prints the val loss before and after fine-tuning and three test responses.
# A model this small learns the response format, not the tasks: read the
# responses for their shape (and the val loss for the trend), not their content.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/instruction-data.json}
OUT=${OUT:-out/finetune_instruct}
EPOCHS=${EPOCHS:-2}
TEXT=../shared/data/tinyshakespeare.txt
# the quick mode: the same steps, a tiny configuration (later flags override the ones before them)
QUICK_PRE=() QUICK_FT=()
if [ "${BENCH_QUICK:-}" = 1 ]; then
    mkdir -p "$OUT"
    DATA=${1:-$OUT/quick_instructions.json} TEXT=$OUT/quick_text.txt EPOCHS=1
    python -c "import json; print(json.dumps([{'instruction': f'Repeat the number {i}.', 'input': '', 'output': str(i)} for i in range(40)]))" > "$OUT/quick_instructions.json"
    python -c "print('To be, or not to be, that is the question. ' * 200)" > "$TEXT"
    QUICK_PRE=(--n-layer 1 --n-embd 16 --n-head 2 --block-size 256 --batch-size 4 --max-iters 2 --warmup-iters 1
               --eval-interval 2 --eval-iters 1 --sample-tokens 4 --tokenizer bytes --peak-flops 1e9)
    QUICK_FT=(--warmup-steps 1 --batch-size 4 --eval-interval 0 --n-responses 1 --max-new-tokens 4)
fi
if [ ! -f "$DATA" ]; then
    echo "no instruction data at $DATA: pass its path as the first argument" >&2
    exit 1
fi
mkdir -p "$OUT"
start=$(date +%s)

if [ -z "${INIT:-}" ]; then
    INIT="$OUT/pretrain"
    rm -rf "$INIT"
    echo "pretraining on Tiny Shakespeare (log: $INIT.log)"
    python train.py --data "$TEXT" --tokenizer bpe --vocab-size 1024 --out "$INIT" \
        --preset nano --n-layer 4 --n-head 4 --n-embd 128 --block-size 256 --batch-size 16 \
        --max-iters 300 --warmup-iters 20 --lr 2e-3 --eval-interval 100 "${QUICK_PRE[@]}" > "$INIT.log" 2>&1
fi
pretrained=$(date +%s)

python train.py --task instruct --init-from "$INIT" --data "$DATA" --out "$OUT/instruct" --overwrite \
    --epochs "$EPOCHS" --lr 1e-3 --min-lr 1e-4 --warmup-steps 20 --batch-size 8 --mask-prompt \
    --eval-interval 50 --n-responses 3 --max-new-tokens 64 "${QUICK_FT[@]}"
python - "$OUT/instruct" <<'PY'
import json, sys
from pathlib import Path
final = json.loads((Path(sys.argv[1]) / "metrics.json").read_text())["final"]
print(f"VAL LOSS before {final['val_loss_before']:.4f} -> after {final['val_loss']:.4f}")
for row in map(json.loads, (Path(sys.argv[1]) / "responses.jsonl").read_text().splitlines()):
    print(f"\n### Instruction: {row['instruction']}" + (f"\n### Input: {row['input']}" if row["input"] else ""))
    print(f"expected: {row['output']}\nmodel:    {row['model_response']}")
PY
end=$(date +%s)
echo
echo "wall time $((end - start)) s: pretraining $((pretrained - start)) s, fine-tuning $((end - pretrained)) s"
echo "try it: python -m gpt chat --checkpoint $OUT/instruct"
