"""The training application around the model: what `train.py` and `python -m gpt` are made of.

    settings    every setting of a run, declared once (the flags come from it)
    flags       dataclass fields -> command-line flags
    data        corpus -> prepared token shards (prepare/) -> random or epoch batches (pretraining)
    prepare/    the data pipeline: stream, filter, deduplicate, tokenize in parallel, shard
    loop        the one training loop: accumulation, clipping, schedule, evaluation, checkpoint hooks
    distributed the processes of a run, one or MPI ranks (Comm): gradients summed, comm.print on rank 0
    pretrain    next-token prediction as a task of the loop; resume resolution
    classify    labelled texts as a task of the loop
    instruct    instruction-response pairs as a task of the loop
    dpo         preference pairs (chosen, rejected) as a task of the loop, and its run
    epochs      shuffled mini-batches, epoch after epoch (the fine-tuning tasks)
    finetune    a fine-tuning run: load the base, adapt it, train
    checkpoint  checkpoints written atomically, verified by checksum on load
    inference   load any model folder (ours or Hugging Face's) with its tokenizer, for sampling or fine-tuning
    metrics     metrics.jsonl, the progress bar, loss.png, MFU
    folders     the folders we write and read back: output checks and locks, fine-tuned models, exports
    evaluate    python -m gpt eval: perplexity, bits per byte, multiple choice, instruction answers
    harness     python -m gpt harness: lm-evaluation-harness tasks, answered by the scorers of eval
    chat        python -m gpt chat: a conversation through the model's own template
    cli         python -m gpt sample | classify | chat | eval | harness | prepare | export

Imports go one way: gpt.train -> gpt (the model) -> tinytensor, bpe.
"""
