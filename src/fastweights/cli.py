"""The ``fastweights`` command. Subcommands:

    fastweights --version
    fastweights info                 registered models and the available op implementations
    fastweights demo [--steps N]     train a small Delta RNN on a synthetic memory task
    fastweights memory [--op ...]    peak memory of forward+backward: default path vs naive step loop
"""

from __future__ import annotations

import argparse
import platform

from . import __version__


def _info(_: argparse.Namespace) -> int:
    import torch

    from .layers import available_layers
    from .ops import available_implementations

    print(f"fastweights {__version__}  (torch {torch.__version__}, python {platform.python_version()}, "
          f"{torch.get_num_threads()} threads, cuda available: {torch.cuda.is_available()})")
    print("\nmodels (registry names):")
    for name in available_layers():
        print(f"  {name}")
    print("\nop implementations (default first):")
    for op, impls in sorted(available_implementations().items()):
        print(f"  {op:<12} {', '.join(impls)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .train.demo import run_demo

    run_demo(steps=args.steps, model=args.model, seed=args.seed)
    return 0


def _memory(args: argparse.Namespace) -> int:
    from .bench.memory import main as memory_main

    return memory_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastweights", description="Fast weight programmers in PyTorch.")
    p.add_argument("--version", action="version", version=f"fastweights {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="registered models and available kernels").set_defaults(func=_info)
    d = sub.add_parser("demo", help="train a small Delta RNN on a synthetic memory task")
    d.add_argument("--steps", type=int, default=200)
    d.add_argument("--model", default="delta_rnn", help="registry name of the layer (default delta_rnn)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)
    m = sub.add_parser("memory", help="peak memory of an op's forward+backward vs the naive loop", add_help=False)
    m.add_argument("rest", nargs=argparse.REMAINDER)
    m.set_defaults(func=_memory)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
