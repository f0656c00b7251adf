"""Language modelling: training, evaluation and generation (paper.md C.3, E.1; in the style of nanoGPT's train.py).

One module per concern, each building on the ones before: :mod:`.dist` (processes and devices), :mod:`.data`
(the corpus and batches), :mod:`.model` (the model and the learning rate), :mod:`.evaluate` (three evaluation
modes), :mod:`.generate` (generation and the vocabulary), :mod:`.run` (a finished run read back), :mod:`.loop`
(the training loop). This package exports their public names.

Training (:func:`train_lm`). Adam with a linear warm-up and a cosine decay to 0 at ``max_steps``, global-norm
gradient clipping (paper.md E.1: lr 2.5e-4, 2000 warm-up steps, clip 0.25). By default every step draws
``batch_size`` windows of ``tgt_len + 1`` tokens at random positions of the training split and each starts from a
zero state: the paper's truncated-context training. With ``carry_state`` the split is cut into ``batch_size``
contiguous streams read in order (:class:`~fastweights.data.lm.StreamBatcher`, Transformer-XL's ordered
iterator); the state flows from each window to the next and is detached at every boundary (truncated BPTT, the
paper's "+ full context" runs); it restarts from zero at the start of every pass over the data.

Distributed data parallel. Launched by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), every process
joins a process group (gloo on CPU, nccl on CUDA) and the model is wrapped in ``DistributedDataParallel``.
``batch_size`` is the **global** batch, split evenly over the processes: with random segments the global batch of a
step is drawn once from ``(seed, step)`` and process ``r`` takes rows ``[r * b, (r + 1) * b)``; with
``carry_state`` process ``r`` owns stream columns ``[r * b, (r + 1) * b)`` of the same ``batch_size`` streams. A
run on ``n`` processes therefore computes the gradients of the one-process run with the same ``batch_size``
(dropout masks aside: each process draws its own). Only process 0 writes files.

Runs. A run directory holds ``config.json``, ``meta.json``, ``metrics.csv`` (one row every ``eval_interval``
steps: train and valid loss/perplexity, learning rate, tokens/s), ``last.pt`` and ``best.pt`` (written atomically:
model, optimiser, step, every process's RNG state and carried state) and ``results.json``. ``resume`` continues
from ``last.pt`` exactly: the data of a step is a function of ``(seed, step)``, so an interrupted and resumed run
equals an uninterrupted one bit for bit.

Evaluation (:func:`evaluate_lm`), each reporting loss (nats/token), perplexity and tokens scored:

* ``sliding``: every token is predicted from exactly ``min(t, W)`` preceding tokens (the paper's stride-1 window
  of ``W = tgt_len``): windows of ``W`` tokens are batched and only their last position is scored;
* ``carry``: one pass over the split with the state carried (batch 1, chunks of ``eval_tgt_len``): equal to one
  forward over the whole text (with ``position_order="forward"`` or no positional encoding);
* ``segments``: non-overlapping segments, each from a zero state (fast; the validation during training).

Generation (:func:`generate`) decodes with :meth:`~fastweights.models.lm.LanguageModel.step`: constant memory per
token for the fast-weight layers.
"""

from __future__ import annotations

from .data import load_lm_data, local_batch_size, make_stream_batcher, segment_generator, train_batch
from .dist import DistInfo, dist_info, parameter_digest, run_device
from .evaluate import evaluate_lm, step_decodable, validate
from .generate import VOCAB_FILE, Generation, LMVocab, detokenize, encode_prompt, generate
from .loop import resume_command, train_lm
from .model import lm_model_config, lr_at
from .run import evaluate_lm_run, generate_from_run, lm_run_config, lm_run_vocab, load_lm_model, load_lm_run

__all__ = [
    "VOCAB_FILE", "DistInfo", "Generation", "LMVocab", "detokenize", "dist_info", "encode_prompt", "evaluate_lm",
    "evaluate_lm_run", "generate", "generate_from_run", "lm_model_config", "lm_run_config", "lm_run_vocab",
    "load_lm_data", "load_lm_model", "load_lm_run", "local_batch_size", "lr_at", "make_stream_batcher",
    "parameter_digest", "resume_command", "run_device", "segment_generator", "step_decodable", "train_batch",
    "train_lm", "validate",
]
