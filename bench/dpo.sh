#!/usr/bin/env bash
# Preference tuning with DPO (the book's chapter 7 bonus) on the shared preference set, on a CPU.
#
#   bench/dpo.sh                 pretrain a small GPT briefly on Tiny Shakespeare, instruction-tune it on
#                                instruction-data.json, then DPO on instruction-data-with-preference.json
#   INIT=DIR bench/dpo.sh        DPO from an instruction-tuned model instead (ours, or a Hugging Face folder)
#   BENCH_QUICK=1 bench/dpo.sh   seconds: the same three steps with a tiny model on a generated set (no ../shared)
#
# Prints the val split's reward accuracy and mean reward margin before and after DPO
# (before, the policy is the reference: every reward is 0, so both are 0) and three
# answers to the same test prompts before and after. The instruct and DPO steps use
# the same seed, so they share one 85/5/10 split: DPO's val and test pairs were
# never seen in instruction tuning either.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/bench_dpo}
mkdir -p "$OUT"
start=$(date +%s)

if [ -n "${BENCH_QUICK:-}" ]; then
    # a generated preference set: polite chosen, curt rejected (with "output" too, for the instruct step)
    python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
from gpt.train.instruct import ALPACA
words = "red blue green cat dog sun moon star tree sky rain snow".split()
entries = [{"instruction": f"Name the word {w}.", "input": "", "output": f"The word is {w}.",
            "chosen": f"Of course! The word is {w}.", "rejected": f"Ugh, fine: {w}."} for w in words]
Path(sys.argv[1], "pref.json").write_text(json.dumps(entries * 2))
Path(sys.argv[1], "corpus.txt").write_text(
    "".join(ALPACA.format(e["instruction"]) + e["chosen"] + " " + e["rejected"] + "\n" for e in entries) * 5)
PY
    CORPUS="$OUT/corpus.txt" INSTRUCT_DATA="$OUT/pref.json" PREF_DATA="$OUT/pref.json"
    PRETRAIN=(--vocab-size 300 --n-layer 1 --n-head 2 --n-embd 16 --block-size 128 --batch-size 4 --max-iters 5
              --warmup-iters 1 --eval-iters 1 --sample-tokens 0)
    INSTRUCT=(--epochs 1 --batch-size 8 --lr 1e-2)
    DPO=(--epochs 2 --batch-size 8 --lr 1e-2 --eval-interval 2 --max-new-tokens 8)
else
    CORPUS=../shared/data/tinyshakespeare.txt
    INSTRUCT_DATA=../shared/data/instruction-data.json
    PREF_DATA=../shared/data/instruction-data-with-preference.json
    for f in "$CORPUS" "$INSTRUCT_DATA" "$PREF_DATA"; do
        [ -f "$f" ] || { echo "no $f: this bench needs ../shared/data (or run it with BENCH_QUICK=1)" >&2; exit 1; }
    done
    PRETRAIN=(--vocab-size 1024 --n-layer 2 --n-head 4 --n-embd 64 --block-size 256 --batch-size 8 --max-iters 150
              --warmup-iters 10 --eval-iters 5 --sample-tokens 0)
    INSTRUCT=(--epochs 2 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup-steps 20)
    DPO=(--epochs 1 --batch-size 8 --lr 5e-4 --eval-interval 25 --max-new-tokens 48)
fi

if [ -z "${INIT:-}" ]; then
    echo "pretraining on $CORPUS (log: $OUT/pretrain.log)"
    rm -rf "$OUT/pretrain"
    python train.py --data "$CORPUS" --tokenizer bpe --out "$OUT/pretrain" --preset nano --lr 2e-3 \
        --eval-interval 50 "${PRETRAIN[@]}" > "$OUT/pretrain.log" 2>&1
    echo "instruction tuning on $INSTRUCT_DATA (log: $OUT/instruct.log)"
    python train.py --task instruct --init-from "$OUT/pretrain" --data "$INSTRUCT_DATA" --out "$OUT/instruct" \
        --overwrite --mask-prompt --eval-interval 0 --n-responses 0 "${INSTRUCT[@]}" > "$OUT/instruct.log" 2>&1
    INIT="$OUT/instruct"
fi
instructed=$(date +%s)

echo "DPO on $PREF_DATA from $INIT"
python train.py --task dpo --init-from "$INIT" --data "$PREF_DATA" --out "$OUT/dpo" --overwrite --beta 0.1 \
    --cache-reference --n-responses 3 "${DPO[@]}"
python - "$OUT/dpo" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
final = json.loads((out / "metrics.json").read_text())["final"]
acc0, acc1 = final["val_reward_accuracy_before"], final["val_reward_accuracy"]
m0, m1 = final["val_reward_margin_before"], final["val_reward_margin"]
print(f"\nVAL REWARD ACCURACY before {acc0:.3f} -> after {acc1:.3f}")
print(f"VAL REWARD MARGIN   before {m0:.4f} -> after {m1:.4f}   "
      f"(chosen reward {final['val_chosen_reward']:.4f}, rejected {final['val_rejected_reward']:.4f})")
print(f"VAL LOSS            before {final['val_loss_before']:.4f} -> after {final['val_loss']:.4f}")
for row in map(json.loads, (out / "responses.jsonl").read_text().splitlines()):
    print(f"\n### Instruction: {row['instruction']}" + (f"\n### Input: {row['input']}" if row["input"] else ""))
    print(f"chosen:   {row['chosen']}\nrejected: {row['rejected']}")
    print(f"before:   {row['response_before']}\nafter:    {row['model_response']}")
PY
end=$(date +%s)
echo
echo "wall time $((end - start)) s: pretraining and instruction tuning $((instructed - start)) s," \
    "DPO $((end - instructed)) s"
