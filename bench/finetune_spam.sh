#!/usr/bin/env bash
# Spam classification (book chapter 6) on the balanced SMS Spam Collection.
#
#   bench/finetune_spam.sh [DATA]            pretrain a small GPT briefly, then fine-tune it
#   INIT=DIR bench/finetune_spam.sh          reuse a checkpoint (ours or a Hugging Face GPT-2 folder)
#   BENCH_QUICK=1 bench/finetune_spam.sh     seconds: made-up messages, a tiny model, a few steps (no ../shared)
#
# Target: test accuracy >= 95% in under 10 minutes on a 2-core CPU.
# The pretraining text is the messages of the fine-tuning TRAIN split only (the
# same seeded balance + 70/10/20 split finetune_classifier makes), without their
# labels: no val or test message is seen before it is scored.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/sms_spam_collection.tsv}
OUT=${OUT:-out/finetune_spam}
SEED=${SEED:-123}
# the quick mode: the same steps, a tiny configuration (later flags override the ones before them)
QUICK_PRE=() QUICK_FT=()
if [ "${BENCH_QUICK:-}" = 1 ]; then
    mkdir -p "$OUT"
    DATA=${1:-$OUT/quick_spam.tsv}
    python -c "import sys; sys.stdout.writelines(f'{\"spam\" if i % 2 else \"ham\"}\t{\"WIN a prize now\" if i % 2 else \"see you at lunch\"} {i}\n' for i in range(40))" > "$OUT/quick_spam.tsv"
    QUICK_PRE=(--n-layer 1 --n-embd 16 --n-head 2 --block-size 16 --batch-size 4 --max-iters 2 --warmup-iters 1
               --eval-interval 2 --eval-iters 1 --sample-tokens 4 --tokenizer bytes --peak-flops 1e9)
    QUICK_FT=(--epochs 1 --max-length 16 --warmup-steps 1 --batch-size 4 --eval-interval 0 --balance)
fi
if [ ! -f "$DATA" ]; then
    echo "no SMS Spam Collection at $DATA: pass its path as the first argument" >&2
    exit 1
fi
mkdir -p "$OUT"
start=$(date +%s)

if [ -z "${INIT:-}" ]; then
    INIT="$OUT/pretrain"
    rm -rf "$INIT"
    python - "$DATA" "$OUT/train_text.jsonl" "$SEED" <<'PY'
import json, sys
from gpt.train.classify import SPLIT, balance, label_ids, read_labeled
from gpt.train.finetune import split_dataset
examples = read_labeled(sys.argv[1])
_, ids = label_ids(examples)
examples, ids = balance(examples, ids, int(sys.argv[3]))
train = split_dataset(len(examples), int(sys.argv[3]), SPLIT)["train"]
with open(sys.argv[2], "w") as f:
    f.writelines(json.dumps({"text": examples[i][1]}) + "\n" for i in train)
PY
    echo "pretraining on the train split's text (log: $INIT.log)"
    python train.py --data "$OUT/train_text.jsonl" --tokenizer bpe --vocab-size 1024 --out "$INIT" \
        --preset nano --n-layer 2 --n-head 4 --n-embd 64 --block-size 128 --batch-size 16 \
        --max-iters 300 --warmup-iters 20 --lr 2e-3 --eval-interval 100 "${QUICK_PRE[@]}" > "$INIT.log" 2>&1
fi
pretrained=$(date +%s)

python train.py --task classify --init-from "$INIT" --data "$DATA" --out "$OUT/classifier" --overwrite \
    --balance --trainable all --epochs 5 --lr 1e-3 --min-lr 1e-4 --warmup-steps 20 --batch-size 16 \
    --max-length 128 --eval-interval 66 --seed "$SEED" "${QUICK_FT[@]}"
end=$(date +%s)
echo "wall time $((end - start)) s: pretraining $((pretrained - start)) s, fine-tuning $((end - pretrained)) s"
echo "try it: python -m gpt classify --checkpoint $OUT/classifier \"WINNER! Claim your free prize now\""
