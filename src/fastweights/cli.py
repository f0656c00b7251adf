"""The ``fastweights`` command. Subcommands:

    fastweights --version
    fastweights info                          registered models and the available op implementations
    fastweights demo [--steps N]              train a small Delta RNN on a synthetic memory task
    fastweights data code-exec|listops ...    write the algorithmic data sets in the official formats
    fastweights train code-exec|listops ...   train a model (run directory, checkpoints, resume)
    fastweights train lm --model M [--data DIR] [--preset paper|cpu] [--carry-state] [key=value ...]
                                              train a language model (also under torchrun: DDP)
    fastweights compare code-exec|listops|lm|rl ... train several models x seeds and print a comparison table + plot
    fastweights eval RUN_DIR [--split test]   evaluate a run's best checkpoint
                                              (LM runs: --mode sliding|carry|segments [--context W])
    fastweights eval RUN_DIR --data DIR       ... with the run's data read from where they moved
    fastweights generate RUN_DIR --prompt TEXT [--max-tokens N --temperature T --top-k K --seed S]
                                              continue a prompt with a language-model run or export (step decoding)
    fastweights export RUN_DIR OUT_DIR        the trained model as config.json + model.safetensors + vocabulary
    fastweights plot RUN_DIR... --out F.png   learning curves of several runs
    fastweights memory [--op ...]             peak memory of forward+backward: default path vs naive step loop
    fastweights bench [--shapes tiny,paper]   speed of every op and layer against the naive loop and the matmul peak
    fastweights selftest [--device cuda]      check the Triton kernels (CPU: the CPU implementations) vs float64

Errors in what the user typed (unknown model or key, a bad value, a missing directory, an unreadable file) are
printed as one line (``fastweights: error: ...``) with exit status 2; failures of the machine or the run (a full
disk, a read-only directory, a diverged run) as one line with exit status 1. Set ``FASTWEIGHTS_DEBUG=1`` for the
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

from . import __version__
from .runs.progress import plural


def _info(_: argparse.Namespace) -> int:
    import torch

    from .layers import available_layers
    from .ops import available_implementations

    print(f"fastweights {__version__}  (torch {torch.__version__}, python {platform.python_version()}, "
          f"{plural(torch.get_num_threads(), 'thread')}, cuda available: {torch.cuda.is_available()})")
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


def _task_flags(args: argparse.Namespace, task) -> dict:
    """The configuration keys that ``task``'s flags set (None where a flag was not given)."""
    flags = {f.key: (True if getattr(args, f.dest, False) else None) if f.switch else getattr(args, f.dest, None)
             for f in task.flags}
    flags["device"] = getattr(args, "device", None)
    return flags


def _given(value: object) -> bool:
    """Whether an option was given: a value other than None (``0`` included), or a switch that is on."""
    return value is not None and value is not False


def _data(args: argparse.Namespace) -> int:
    from .tasks import get_task

    task = get_task(args.task)
    cfg = task.resolve_config(None, args.overrides, _task_flags(args, task))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in task.write_data(cfg, out):
        print(path)
    return 0


@contextlib.contextmanager
def _run_dir(args: argparse.Namespace, task, cfg, preset: str) -> Iterator[Path]:
    """``--run-dir``, else a new default run directory (removed again when the run fails before writing to it)."""
    if args.run_dir:
        yield Path(args.run_dir)
        return
    from .runs.directory import default_run_dir

    run_dir = default_run_dir(cfg, preset, task.run_label(cfg))
    try:
        yield run_dir
    except BaseException:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only when empty
        raise


def _train(args: argparse.Namespace) -> int:
    from .fields import ConfigError
    from .plugins import trust_models
    from .runs.config import config_to_dict, default_preset
    from .tasks import get_task, resumed_config

    task = get_task(args.task)
    trust_models([args.model])  # a user's layer named on the command line: its module may be imported
    if args.resume:  # a resumed run keeps its config.json; only the device may change
        given = [f"--{k.replace('_', '-')}" for k in ("model", "preset", "run_dir", *(f.dest for f in task.flags))
                 if _given(getattr(args, k, None))]
        cfg = resumed_config(args.resume, task.name, given + list(args.overrides))
        if args.device is not None:
            cfg.device = args.device
        cfg.validate()
        task.train(cfg, Path(args.resume), resume=True, command=args.command_line)
        return 0
    preset = args.preset or default_preset(task.name)
    cfg = task.resolve_config(preset, args.overrides, {**_task_flags(args, task), "model": args.model})
    if args.dry_run:
        import json

        lines = task.describe(cfg)
        print(json.dumps(config_to_dict(cfg), indent=2, sort_keys=True))
        print("\n".join(lines))
        return 0
    if not args.run_dir and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a default name is per process
        raise ConfigError("--run-dir: required under torchrun: its processes must share one run directory")
    if args.preset is None and preset is not None:
        print(f"preset: {preset} (the default; --preset paper for the paper's setting)", flush=True)
    with _run_dir(args, task, cfg, preset) as run_dir:
        task.train(cfg, run_dir, command=args.command_line)
    return 0


def _compare(args: argparse.Namespace) -> int:
    from .compare import compare
    from .plugins import trust_models
    from .runs.config import default_preset
    from .tasks import get_task

    seeds = None
    if args.seeds is not None:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"--seeds: expected comma-separated integers, e.g. 11,12,13, got {args.seeds!r}") from None
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    trust_models(models)
    preset = args.preset or default_preset(args.task)
    compare(args.task, models, preset, args.overrides,
            Path(args.out_dir), flags=_task_flags(args, get_task(args.task)), seeds=seeds, jobs=args.jobs,
            report_only=args.report_only)
    return 0


#: Options of ``fastweights eval`` that some tasks take (:attr:`fastweights.tasks.Task.eval_options`).
EVAL_OPTIONS = ("split", "data", "mode", "context", "batch_size", "episodes", "runs", "sample")


def _eval(args: argparse.Namespace) -> int:
    from .runs.directory import json_text
    from .tasks import get_task, run_task, task_names

    run_dir = Path(args.run_dir)
    task = run_task(run_dir)
    given = [name for name in EVAL_OPTIONS if _given(getattr(args, name))]
    foreign = [name for name in given if name not in task.eval_options]
    if foreign:
        flags = " ".join(f"--{name.replace('_', '-')}" for name in foreign)
        owners = [t for t in task_names() if foreign[0] in get_task(t).eval_options]
        raise ValueError(f"{flags}: only for {' and '.join(owners) or 'other'} runs; {run_dir} is a {task.name} run")
    checkpoint = task.check_checkpoint(run_dir, args.checkpoint)
    metrics = task.evaluate(run_dir, checkpoint, args.device, {name: getattr(args, name) for name in given})
    print(json_text(metrics, sort_keys=False))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from .loading import from_pretrained, is_export
    from .tasks import run_task

    run_dir = Path(args.run_dir)
    if is_export(run_dir):  # an export directory (fastweights export) holds no checkpoints
        loaded = from_pretrained(run_dir, device=args.device)
        if not hasattr(loaded, "generate"):
            raise ValueError(f"path: {run_dir} is an exported {loaded.task} model; generate needs a language model")
        out = loaded.generate(args.prompt, args.max_tokens, args.temperature, args.top_k, args.seed)
        print(out.after(args.prompt))
        return 0
    task = run_task(run_dir)
    if not task.generates:
        raise ValueError(f"run_dir: {run_dir} is a {task.name} run; generate needs a language-model run")
    out = task.generate(run_dir, args.prompt, args.max_tokens, args.temperature, args.top_k, args.seed,
                        args.checkpoint, args.device)
    print(out.after(args.prompt))
    return 0


def _export(args: argparse.Namespace) -> int:
    from .loading import export

    out = export(Path(args.run_dir), Path(args.out_dir), checkpoint=args.checkpoint)
    for path in sorted(out.iterdir()):
        print(path)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from .runs.plots import plot_runs
    from .tasks import run_task

    run_dirs = [Path(d) for d in args.run_dirs]
    if args.metrics is None:
        metrics = run_task(run_dirs[0]).curve_metrics
    else:
        metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    print(plot_runs(run_dirs, Path(args.out), metrics))
    return 0


def _keys_epilog(task: str | None, command: str) -> str:
    """The ``key=value`` keys of ``task``'s configuration for ``--help``, from the dataclass fields themselves."""
    if task is None:
        return f"key=value keys: `fastweights {command} TASK --help` lists those of TASK."
    from .runs.config import DEFAULT_PRESET, describe_fields, load_preset, preset_names
    from .tasks import get_task

    cls = get_task(task).config_class()
    have = preset_names(task)
    paper = load_preset(cls(task=task), task, "paper") if "paper" in have else None
    if command == "data":  # no preset: the official data sets by default
        return (f"key=value keys of {task} (the data keys matter here). Columns: key, type, default (the paper's "
                f"data), meaning:\n" + describe_fields(cls(task=task)))
    if DEFAULT_PRESET not in have:
        return (f"key=value keys of {task} (anywhere after the task). Columns: key, type, default, meaning:\n"
                + describe_fields(cls(task=task)))
    default = load_preset(cls(task=task), task, DEFAULT_PRESET)
    return (f"key=value keys of {task} (anywhere after the task; --preset sets them first). Columns: key, type, "
            f"value in the default {DEFAULT_PRESET} preset, meaning (the paper preset's value where it differs):\n"
            + describe_fields(default, paper, "paper"))


def _add_task_flags(p: argparse.ArgumentParser, task, command: str) -> None:
    """The flags of ``task`` only: a flag of another task is refused in one line (:func:`_other_tasks_flags`)."""
    for flag in task.flags:
        if command in flag.commands:
            help_text = flag.compare_help if command == "compare" and flag.compare_help else flag.help
            if flag.switch:
                p.add_argument(flag.name, action="store_true", help=help_text)
            else:
                p.add_argument(flag.name, type=flag.type, default=None, help=help_text)
    if command != "data":
        p.add_argument("--device", default=None, help="cpu (default) or cuda")


def _task_parsers(parent: argparse.ArgumentParser, command: str, help_task: str | None
                  ) -> dict[str, argparse.ArgumentParser]:
    """One sub-parser per task under ``command`` (``train``, ``compare``, ``data``): each takes its task's flags and
    lists its task's ``key=value`` keys in ``--help``."""
    from .tasks import get_task, task_names

    sub = parent.add_subparsers(dest="task", metavar="TASK", required=True)
    parsers = {}
    for name in task_names():
        task = get_task(name)
        if command == "data" and not task.writes_data:
            continue
        epilog = _keys_epilog(name, command) if name == help_task else None
        p = sub.add_parser(name, help=task.summary, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_task_flags(p, task, command)
        parsers[name] = p
    return parsers


def _add_overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="*", metavar="key=value", help="configuration overrides")


def _other_tasks_flags(parser: argparse.ArgumentParser, argv: list[str], args: argparse.Namespace,
                       stray: list[str]) -> str | None:
    """The one-line refusal of flags that belong to other tasks of ``train``/``compare`` than ``args.task``
    (``--env: only for rl, not for listops``; for lm and rl: ``--depth: not for rl``); None when ``stray`` holds
    none."""
    command, task = argv[0], getattr(args, "task", None)
    if command not in ("train", "compare") or task is None:
        return None
    owners: dict[str, list[str]] = {}
    for name, p in _subparsers(_subparsers(parser)[command]).items():
        for flag in p._option_string_actions:
            owners.setdefault(flag, []).append(name)
    wrong = [f for f in stray if f.split("=", 1)[0] in owners]
    if not wrong:
        return None
    flags = [f.split("=", 1)[0] for f in wrong]
    return f"{flags[0]}: only for {', '.join(owners[flags[0]])}, not for {task}"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def build_parser(help_task: str | None = None) -> argparse.ArgumentParser:
    """The command's parser; ``help_task``: the task whose keys ``train/data/compare TASK --help`` lists."""
    p = argparse.ArgumentParser(prog="fastweights", description="Fast weight programmers in PyTorch.")
    keys = {"formatter_class": argparse.RawDescriptionHelpFormatter}
    p.add_argument("--version", action="version", version=f"fastweights {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="registered models and available kernels").set_defaults(func=_info)

    d = sub.add_parser("demo", help="train a small Delta RNN on a synthetic memory task")
    d.add_argument("--steps", type=int, default=200)
    d.add_argument("--model", default="delta_rnn", help="registry name of the layer (default delta_rnn)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo)

    g = sub.add_parser("data", help="write an algorithmic data set in the official file format",
                       epilog=None if help_task else _keys_epilog(None, "data"), **keys)
    for task_parser in _task_parsers(g, "data", help_task).values():
        task_parser.add_argument("--out", required=True, help="output directory")
        _add_overrides(task_parser)
    g.set_defaults(func=_data)

    t = sub.add_parser("train", help="train a model on a benchmark (lm: a language model, also under torchrun)",
                       epilog=_keys_epilog(None, "train"), **keys)
    for task_parser in _task_parsers(t, "train", help_task).values():
        task_parser.add_argument("--model", default=None, help="registry name (see `fastweights info`)")
        task_parser.add_argument("--preset", default=None,
                                 help="cpu (the default: minutes on a CPU), paper (the paper's setting) or a path to "
                                      "a .json preset")
        task_parser.add_argument("--run-dir", default=None, help="run directory (default runs/<task>-...-<time>)")
        task_parser.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run")
        task_parser.add_argument("--dry-run", action="store_true",
                                 help="build everything, print config and parameters, exit")
        _add_overrides(task_parser)
    t.set_defaults(func=_train)

    c = sub.add_parser("compare", help="train models x seeds with one preset (resumable, --jobs at a time); "
                                        "table of mean ± std and curves with seed bands",
                       epilog=_keys_epilog(None, "compare"), **keys)
    for task_parser in _task_parsers(c, "compare", help_task).values():
        task_parser.add_argument("--models", default="lstm,linear_transformer,delta_net,delta_rnn")
        task_parser.add_argument("--preset", default=None,
                                 help="cpu (the default), paper or a path to a .json preset")
        task_parser.add_argument("--out-dir", default="runs/compare")
        task_parser.add_argument("--seeds", default=None,
                                 help="comma-separated seeds, e.g. 11,12,13 (default: the preset's seed)")
        task_parser.add_argument("--jobs", type=int, default=1,
                                 help="runs at a time, each a separate process with the preset's threads (default 1)")
        task_parser.add_argument("--report-only", action="store_true",
                                 help="train nothing: summarise the finished runs in --out-dir, name the others")
        _add_overrides(task_parser)
    c.set_defaults(func=_compare)

    e = sub.add_parser("eval", help="evaluate a run's checkpoint on a split")
    e.add_argument("run_dir")
    e.add_argument("--split", default=None, choices=("train", "valid", "test"),
                   help="code-exec, listops and lm runs (default test)")
    e.add_argument("--checkpoint", default=None,
                   help="best (default) or last; rl runs: last (default) or step-<N> (an extra checkpoint)")
    e.add_argument("--device", default=None)
    e.add_argument("--mode", default=None, choices=("sliding", "carry", "segments"),
                   help="LM runs: sliding (every token with min(t, W) context), carry (state carried through the "
                        "split) or segments (fast); default: carry for --carry-state runs, else sliding")
    e.add_argument("--context", type=int, default=None,
                   help="LM runs: W of sliding (default tgt_len), segment/chunk length otherwise (eval_tgt_len)")
    e.add_argument("--batch-size", type=int, default=None, help="LM runs: windows or segments per forward")
    e.add_argument("--episodes", type=int, default=None, help="rl runs: episodes per evaluation run (default 30)")
    e.add_argument("--runs", type=int, default=None, help="rl runs: evaluation runs (default 5)")
    e.add_argument("--sample", action="store_true", help="rl runs: sample actions instead of greedy ones")
    e.add_argument("--data", default=None, metavar="DIR",
                   help="the run's data when they moved (LM corpus directory, algorithmic data files); their "
                        "vocabulary must be the run's")
    e.set_defaults(func=_eval)

    gn = sub.add_parser("generate", help="continue a prompt with a language-model run (step-by-step decoding)")
    gn.add_argument("run_dir", help="a language-model run directory, or an export of one (fastweights export)")
    gn.add_argument("--prompt", default="", help="text to continue (default: start a new line)")
    gn.add_argument("--max-tokens", type=int, default=100, help="tokens to generate (default 100)")
    gn.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 = greedy (default 1)")
    gn.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens (default all)")
    gn.add_argument("--seed", type=int, default=None, help="random seed of the sampling (default: random)")
    gn.add_argument("--checkpoint", default="best", choices=("best", "last"))
    gn.add_argument("--device", default=None)
    gn.set_defaults(func=_generate)

    ex = sub.add_parser("export", help="write a run's trained model as config.json, model.safetensors (weights "
                                       "only, no pickle) and its vocabulary or environment spec")
    ex.add_argument("run_dir")
    ex.add_argument("out_dir", help="a new (or empty) directory; fastweights.from_pretrained(OUT_DIR) loads it")
    ex.add_argument("--checkpoint", default="best", help="best (default) or last; rl runs: last or step-<N>")
    ex.set_defaults(func=_export)

    pl = sub.add_parser("plot", help="learning curves of one or more runs on one figure")
    pl.add_argument("run_dirs", nargs="+")
    pl.add_argument("--out", required=True)
    pl.add_argument("--metrics", default=None,
                    help="comma-separated metrics.csv columns (default valid_acc,train_loss; LM runs valid_ppl,"
                         "train_loss)")
    pl.set_defaults(func=_plot)

    # listed for --help only: main() hands `memory ...` and `bench ...` to their own parsers
    sub.add_parser("memory", help="peak memory of an op's forward+backward vs the naive loop", add_help=False)
    sub.add_parser("bench", help="speed and memory of every op and layer: default vs naive loop, matmul peak",
                   add_help=False)
    sub.add_parser("selftest", help="check the Triton kernels on this GPU against float64 (correctness, speed)",
                   add_help=False)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["memory"]:  # its own argument parser takes every option that follows
        from .bench.memory import main as memory_main

        return memory_main(argv[1:])
    if argv[:1] == ["bench"]:
        from .bench.ops_bench import main as bench_main

        return bench_main(argv[1:])
    if argv[:1] == ["selftest"]:
        from .selftest import main as selftest_main

        return selftest_main(argv[1:])
    from .plugins import load_plugins

    try:  # the user's plugins add tasks and layers to the parsers
        load_plugins()
    except ValueError as e:
        print(f"fastweights: error: {e}", file=sys.stderr)
        return 2
    help_task = None
    if argv[:1] in (["train"], ["data"], ["compare"]) and {"-h", "--help"} & set(argv):
        from .tasks import task_names

        help_task = next((a for a in argv[1:] if a in task_names()), None)
    parser = build_parser(help_task)
    # key=value overrides may come after options (argparse's positionals would stop at the first option)
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if stray:
        message = _other_tasks_flags(parser, argv, args, stray)
        if message is not None:  # one line, like every error of what the user typed
            print(f"fastweights: error: {message}", file=sys.stderr)
            return 2
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    args.command_line = ["fastweights", *argv]
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        if getattr(args, "device", None) is not None:
            from .runs.config import check_device

            check_device(args.device, "--device")
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as e:  # ConfigError: a ValueError
        if os.environ.get("FASTWEIGHTS_DEBUG"):
            raise
        print(f"fastweights: error: {e}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as e:  # a full disk, a read-only directory, a diverged run: not the user's typing
        from .runs.directory import TrainingDiverged

        if os.environ.get("FASTWEIGHTS_DEBUG") or not isinstance(e, (OSError, TrainingDiverged)):
            raise
        print(f"fastweights: error: {_os_error_line(e) if isinstance(e, OSError) else e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # training loops save and raise Interrupted, whose message says how to resume
        if os.environ.get("FASTWEIGHTS_DEBUG"):
            raise
        from .runs.interrupt import Interrupted, signal_name, signal_of

        message = str(e) if isinstance(e, Interrupted) else f"interrupted ({signal_name(signal_of(e))})"
        print(f"fastweights: {message}", file=sys.stderr, flush=True)
        return 128 + int(signal_of(e))


def _os_error_line(e: OSError) -> str:
    """One line for an operating-system error: the file and what happened (``No space left on device`` for a full
    disk), without Python's ``[Errno N]`` prefix; a run's last complete checkpoint is never replaced by a torn one."""
    if e.errno is None or e.strerror is None:  # raised with a message of our own
        return str(e)
    what = e.strerror[0].lower() + e.strerror[1:]
    where = e.filename if e.filename is not None else "?"
    extra = "; the files written before (the last complete checkpoint) are kept" if e.errno == errno.ENOSPC else ""
    return f"{where}: {what}{extra}"


if __name__ == "__main__":
    raise SystemExit(main())
