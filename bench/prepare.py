"""Benchmark the data pipeline (python -m gpt prepare): peak memory, throughput, each stage's cost.

    python bench/prepare.py                 # all three parts; the 2 GB corpus is built under /tmp and deleted
    python bench/prepare.py --no-big        # leave out the 2 GB memory run (minutes)
    python bench/prepare.py --big-only      # the 2 GB memory run alone
    BENCH_QUICK=1 python bench/prepare.py   # a tiny corpus from CPython's docs, bytes tokenizer: seconds

1. memory: a corpus of --big-mb built from the shared corpora (each document a
   different draw of their paragraphs, so it is neither one text repeated nor
   duplicates), prepared with --workers 2 and --dedup; the peak resident memory
   of the whole process tree (the command and its workers), polled from /proc.
2. throughput on the shared Gutenberg text (GPT-2's tokenizer, a fresh process, so
   its cache starts cold), every filter off, against a streaming prepare with
   tiktoken on the same documents with the same number of worker processes
   (nanoGPT / build-nanogpt style: a pool maps documents to uint16 arrays appended
   to a shard). Both are timed end to end as a command, start-up included.
3. each filter stage alone on the same text: its time and its cost over (2).

Every run is a subprocess; timings on a shared machine are noisy, so compare the
figures of one run.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # the packages, ahead of this folder (which has a bpe.py of its own)
DATA = ROOT.parent / "shared" / "data"
from bench_quick import QUICK  # noqa: E402  (bench/bench_quick.py: bench/ is on the path)
from peak_memory import run_watched  # noqa: E402
EOT = "<|endoftext|>"


def timed(cmd: list[str]) -> tuple[float, int]:
    """(seconds, peak resident bytes of the process tree) of a command, which must succeed."""
    seconds, returncode, peak = run_watched(cmd, ROOT)
    if returncode:
        raise SystemExit(f"failed ({returncode}): {' '.join(cmd)}")
    return seconds, peak


def prepare_cmd(data: Path, out: Path, tokenizer: list[str], workers: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", "gpt", "prepare", "--data", str(data), *tokenizer, "--out", str(out),
            "--overwrite", "--workers", str(workers), "--no-progress", *flags]


# ---- the corpora -----------------------------------------------------------------------

def paragraphs() -> list[str]:
    if QUICK:
        import pydoc_data.topics

        texts = list(pydoc_data.topics.topics.values())
    else:
        texts = [(DATA / name).read_text(encoding="utf-8") for name in
                 ("gutenberg_classics.txt", "tinyshakespeare.txt", "the-verdict.txt")]
        texts += [f"{e['instruction']}\n\n{e['input']}\n\n{e['output']}"
                  for e in json.loads((DATA / "instruction-data.json").read_text(encoding="utf-8"))]
    return [p for t in texts for p in t.split("\n\n") if len(p.split()) >= 5]


def build_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """A .jsonl of about `megabytes`: each document 20-80 paragraphs drawn at random."""
    rng = random.Random(seed)
    paras = paragraphs()
    written = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < megabytes * 1e6:
            line = json.dumps({"text": "\n\n".join(rng.choices(paras, k=rng.randint(20, 80)))}) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
    return written


# ---- the tiktoken baseline (run as: python bench/prepare.py --tiktoken-baseline FILE OUT WORKERS) ----

_enc = None     # made before the pool forks, so every worker has it


def _tiktoken_encoding(tokenizer_file: str):
    import tiktoken

    from bpe import Tokenizer

    tok = Tokenizer.load(tokenizer_file)
    return tiktoken.Encoding("gpt2-local", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks(),
                             special_tokens={EOT: tok.special_tokens[EOT]})


def _tiktoken_doc(text: str):
    import numpy as np

    return np.asarray(_enc.encode_ordinary(text), dtype=np.uint16)


def tiktoken_baseline(data: str, out: str, workers: int, tokenizer_file: str) -> None:
    """Stream the documents (gutenberg cut at blank-line triples) through a pool into one shard."""
    import multiprocessing

    import numpy as np

    global _enc
    _enc = _tiktoken_encoding(tokenizer_file)
    text = Path(data).read_text(encoding="utf-8")
    docs = (d for d in text.split("\n\n\n") if d.strip())
    eot = np.array([50256], dtype=np.uint16)
    with open(out, "wb") as f, multiprocessing.get_context("fork").Pool(workers) as pool:
        for ids in pool.imap(_tiktoken_doc, docs, chunksize=16):
            f.write(eot.tobytes())
            f.write(ids.tobytes())


# ---- the bench ---------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--big-mb", type=float, default=2000.0, help="size of the memory run's corpus")
    ap.add_argument("--no-big", action="store_true", help="leave out the memory run")
    ap.add_argument("--big-only", action="store_true", help="the memory run alone")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tiktoken-baseline", nargs=4, metavar=("FILE", "OUT", "WORKERS", "TOKENIZER"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.tiktoken_baseline:
        data, out, workers, tokenizer = args.tiktoken_baseline
        tiktoken_baseline(data, out, int(workers), tokenizer)
        return

    tmp = Path(tempfile.mkdtemp(prefix="bench-prepare-", dir="/tmp"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    workers = args.workers
    if QUICK:
        text = tmp / "small.txt"
        text.write_text("\n\n\n".join(paragraphs()[:1000]), encoding="utf-8")
        tokenizer = ["--tokenizer", "bytes"]
        big_mb = 1.0
    else:
        text = DATA / "gutenberg_classics.txt"
        tokenizer = ["--tokenizer", "gpt2", "--gpt2-vocab", str(DATA / "gpt2")]
        big_mb = args.big_mb
    rows = []

    # 1. memory
    if not args.no_big:
        corpus = tmp / "big.jsonl"
        size = build_corpus(corpus, big_mb)
        seconds, peak = timed(prepare_cmd(corpus, tmp / "big-out", tokenizer, workers, "--dedup"))
        meta = json.loads((tmp / "big-out" / "meta.json").read_text())
        corpus.unlink()
        shutil.rmtree(tmp / "big-out")
        print(f"memory: {size / 1e6:,.0f} MB corpus ({meta['documents_in']:,} documents, "
              f"{meta['train_tokens'] + meta['val_tokens']:,} tokens), --workers {workers} --dedup: "
              f"peak RSS {peak / 1e6:,.0f} MB (bound 1,000 MB for 2 GB), {size / 1e6 / seconds:.2f} MB/s")
    if args.big_only:
        return

    # 2. throughput, filters off, against tiktoken
    mb = text.stat().st_size / 1e6
    split = ["--split-text", "\\n\\n\\n"]
    base, peak = timed(prepare_cmd(text, tmp / "off", tokenizer, workers, *split, "--no-overlap"))
    rows.append(("filters off", base, peak))
    tiktoken_s = None
    if not QUICK:
        try:
            import tiktoken  # noqa: F401

            tiktoken_s, tpeak = timed([sys.executable, __file__, "--tiktoken-baseline", str(text),
                                       str(tmp / "tiktoken.bin"), str(workers), str(tmp / "off" / "tokenizer.json")])
        except ImportError:
            print("tiktoken is not installed: its comparison is skipped")

    # 3. each stage alone
    stages = [("overlap report", []), ("--dedup", ["--dedup", "--no-overlap"]),
              ("--quality", ["--quality", "--no-overlap"]), ("--lang en", ["--lang", "en", "--no-overlap"]),
              ("--near-dedup", ["--near-dedup", "--no-overlap"]), ("--fix-text", ["--fix-text", "--no-overlap"]),
              ("all of them", ["--dedup", "--quality", "--lang", "en", "--near-dedup", "--fix-text"])]
    needs = {"--lang en": "py3langid", "--near-dedup": "datasketch", "--fix-text": "ftfy"}
    for name, flags in stages:
        if name in needs and not _installed(needs[name]):
            print(f"{name}: {needs[name]} is not installed, skipped")
            continue
        seconds, peak = timed(prepare_cmd(text, tmp / "stage", tokenizer, workers, *split, *flags))
        rows.append((name, seconds, peak))

    print(f"\nthroughput on {text.name} ({mb:.1f} MB), {' '.join(tokenizer[:2])}, --workers {workers}, "
          "end to end as a command:")
    print(f"  {'stage':<16} {'seconds':>8} {'MB/s':>7} {'cost':>8} {'peak RSS':>9}")
    for name, seconds, peak in rows:
        cost = "" if name == "filters off" else f"+{seconds - base:.2f}s"
        print(f"  {name:<16} {seconds:8.2f} {mb / seconds:7.2f} {cost:>8} {peak / 1e6:7.0f}MB")
    if tiktoken_s is not None:
        print(f"  {'tiktoken':<16} {tiktoken_s:8.2f} {mb / tiktoken_s:7.2f} {'':>8} {tpeak / 1e6:7.0f}MB")
        print(f"ours / tiktoken, filters off: {tiktoken_s / base:.2f}x its MB/s (goal >= 0.8x)")


def _installed(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


if __name__ == "__main__":
    main()
