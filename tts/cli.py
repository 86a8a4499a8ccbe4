"""The `tts` command."""

# Building the parser imports nothing heavy (no torch, no transformers), so `tts --help` and an
# argument error answer at once; each command imports what it needs when it runs
# (benchmarks/cli_startup.py measures it).

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

import yaml
from pydantic import ValidationError

from tts import __version__
from tts.errors import TTSError, invalid_options

if TYPE_CHECKING:
    from pydantic import BaseModel

# The names of `tts.search.STRATEGIES`, for help texts: importing tts.search imports the engine.
# tests/test_cli.py checks that the two agree.
STRATEGY_NAMES = ("majority", "best_of_n", "weighted_best_of_n", "beam", "dvts", "mcts")
BACKEND_HELP = "native (default), hf (transformers, the reference), vllm, or remote (--model URL)"
TOKENIZER_HELP = "remote backend: a folder with the served model's tokenizer, for its chat template"


def budgets(text: str) -> list[int]:
    """Parse `--n 1,4,16`."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every n must be >= 1, got {text!r}")
    return sorted(set(values))


def strategy_option(text: str) -> tuple[str, object]:
    """Parse `-o key=value`; the value is read as YAML, so numbers and booleans get their type."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value) if value.strip() else value


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags `tts bench` and `tts compare` share: model, data, budgets, sampling, output."""
    parser.add_argument(
        "--model",
        default="builtin",
        help="Hugging Face model folder (default: builtin), or a server URL with --backend remote",
    )
    parser.add_argument("--backend", default="native", help=BACKEND_HELP)
    parser.add_argument("--tokenizer", help=TOKENIZER_HELP)
    parser.add_argument("--dataset", default="math500", help="name, .jsonl path or hf:OWNER/NAME")
    parser.add_argument(
        "--prm", help="PRM folder for best_of_n, beam, dvts, mcts (default: builtin)"
    )
    parser.add_argument("--n", dest="ns", type=budgets, default=[1, 4, 16], help="e.g. 1,4,16")
    parser.add_argument("--limit", type=int, help="first LIMIT problems only")
    parser.add_argument("--max-tokens", type=int, default=1024, help="per completion")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=32, help="rows solved at once")
    parser.add_argument("--device", help="torch device (default: cuda if present, else cpu)")
    parser.add_argument("--dtype", help="float32, bfloat16 or float16")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def add_bench(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench",
        help="accuracy of a strategy on a dataset at several budgets",
        description="Run a strategy over a dataset at each budget n and print an accuracy table. "
        "Re-running with the same --out resumes where the last run stopped.",
    )
    add_run_flags(bench)
    bench.add_argument("--strategy", default="majority", help=f"one of {', '.join(STRATEGY_NAMES)}")
    bench.add_argument(
        "-o",
        "--option",
        dest="options",
        action="append",
        type=strategy_option,
        default=[],
        metavar="KEY=VALUE",
        help="a strategy option, e.g. -o beam_width=4 -o aggregation=min (repeatable)",
    )
    bench.add_argument(
        "--plot", action="store_true", help="draw accuracy against tokens to OUT/accuracy.png"
    )


def add_compare(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare",
        help="several strategies at the same budgets: accuracy against tokens and time",
        description="Run each --strategy at each budget n over one dataset and draw accuracy "
        "against generated tokens and wall time for all of them in OUT/compare.png, with the "
        "table in OUT/compare.md and compare.json. Re-running with the same --out resumes.",
    )
    add_run_flags(compare)
    compare.add_argument(
        "--strategy",
        dest="strategies",
        action="append",
        required=True,
        metavar="NAME[:KEY=VALUE,...][@N,...]",
        help="a strategy, its options and its own budgets, e.g. majority@4,16,64 or "
        "beam:beam_width=4 (repeatable)",
    )


def add_model(commands: argparse._SubParsersAction) -> None:
    model = commands.add_parser("model", help="make model folders")
    kinds = model.add_subparsers(dest="kind", required=True)
    tiny = kinds.add_parser("tiny", help="a tiny random-weight model for tests and demos")
    tiny.add_argument("--out", type=Path, required=True, help="folder to write")
    tiny.add_argument("--family", choices=["llama", "qwen2", "qwen3"], default="llama")
    tiny.add_argument("--seed", type=int, default=0)


def add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve",
        help="an OpenAI-compatible server where a request can ask for more thinking",
        description="Serve a model over the OpenAI API (/v1/chat/completions, /v1/completions, "
        "/v1/models, /health, /metrics). Flags override --config.",
    )
    serve.add_argument("--config", type=Path, help="YAML server config (see configs/server.yaml)")
    serve.add_argument(
        "--model", help="Hugging Face model folder (default: builtin), or a URL (--backend remote)"
    )
    serve.add_argument("--prm", help="process reward model folder, for guided search")
    serve.add_argument("--backend", help=BACKEND_HELP)
    serve.add_argument("--tokenizer", help=TOKENIZER_HELP)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, help="TCP port (default 8000)")
    serve.add_argument("--api-key", help="require `Authorization: Bearer KEY`")
    serve.add_argument("--max-concurrency", type=int, help="requests served at once")
    serve.add_argument("--device", help="torch device (default: cuda if present, else cpu)")
    serve.add_argument("--dtype", help="float32, bfloat16 or float16")


# `tts data` commands that run a model over a problem set: name -> (module, what it makes).
DATA_JOBS = {
    "reject": (
        "tts.data.reject",
        "a rejection-sampled SFT set: sample --n candidates per problem, keep the verified "
        "correct ones that pass the filters, at most --keep per problem",
    ),
    "difficulty": (
        "tts.data.difficulty",
        "each problem's pass rate over --n samples, written into a copy of the dataset",
    ),
    "shepherd": (
        "tts.data.shepherd",
        "Math-Shepherd process labels: --k completions after each step of --n solutions",
    ),
    "pairs": (
        "tts.data.pairs",
        "long-to-short preference pairs: the shortest correct candidate against a longer one",
    ),
}


class JobParser(argparse.ArgumentParser):
    """The parser of a `tts data` job, whose flags come from the job's config. The config's
    module imports the engine, so they are added only when this command is the one parsed."""

    def __init__(self, *args: Any, job_module: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job_module = job_module

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self.job_module is not None:
            add_config_flags(self, importlib.import_module(self.job_module).JOB.config)
            self.job_module = None
        return super().parse_known_args(args, namespace)


def add_config_flags(parser: argparse.ArgumentParser, config: type[BaseModel]) -> None:
    """One flag per field of a pydantic config (`max_tokens` -> `--max-tokens`), documented by
    the field; values are passed to the config as typed, and pydantic converts and checks them."""
    for name, field in config.model_fields.items():
        if name == "options":
            parser.add_argument(
                "-o",
                "--option",
                dest="options",
                action="append",
                type=strategy_option,
                metavar="KEY=VALUE",
                help="a strategy option, e.g. -o beam_width=4 (repeatable)",
            )
            continue
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action="store_true", help=field.description)
            continue
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else None
        default = "" if field.is_required() else f" (default: {field.default})"
        parser.add_argument(
            flag,
            dest=name,
            required=field.is_required(),
            choices=choices,
            metavar=None if choices else name.upper(),
            help=f"{field.description}{default}",
        )


def add_data(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="make training data")
    kinds = data.add_subparsers(dest="kind", required=True, parser_class=JobParser)
    synth = kinds.add_parser(
        "synth",
        help="synthetic verifiable problems with worked solutions, in the SFT format",
        description="Append problems 0..N-1 to --out; re-running continues where it stopped.",
    )
    synth.add_argument("--task", default="arith", help="synthetic task: arith or countdown")
    synth.add_argument("--difficulty", type=int, default=2, help="1 (easiest) to 5")
    synth.add_argument("--n", type=int, default=1000, help="problems")
    synth.add_argument("--style", choices=["short", "long"], default="short", help="trace style")
    synth.add_argument("--error-rate", type=float, default=0.3, help="long style: errors per step")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", type=Path, required=True, help="SFT JSON Lines file")
    for kind, (module, what) in DATA_JOBS.items():
        kinds.add_parser(
            kind,
            help=what,
            description=f"Make {what}. Records are appended to --out as each problem finishes; "
            "re-running the same command resumes where the last run stopped.",
            job_module=module,
        )


def run_data_job(kind: str, values: dict[str, object]) -> None:
    from tts.data.job import progress_path, run_job

    job = importlib.import_module(DATA_JOBS[kind][0]).JOB
    given = {k: v for k, v in values.items() if v is not None and v is not False}
    if "options" in given:
        given["options"] = dict(given["options"])
    try:
        config = job.config(**given)
    except ValidationError as error:
        raise invalid_options(f"data {kind} options", error) from None
    for line in run_job(job, config):
        print(line)
    print(f"records: {config.out}  progress: {progress_path(config.out)}")


def add_loop(
    loops: argparse._SubParsersAction, name: str, what: str, description: str
) -> argparse.ArgumentParser:
    """A training command: a YAML recipe, and the overrides every loop takes."""
    loop = loops.add_parser(
        name,
        help=what,
        description=f"{description} Running the same command again resumes from OUT/checkpoint.",
    )
    loop.add_argument("--recipe", type=Path, required=True, help="YAML recipe")
    loop.add_argument("--out", type=Path, help="override the recipe's output folder")
    loop.add_argument("--max-steps", type=int, help="override the recipe's max_steps")
    loop.add_argument("--device", help="torch device (default: cuda if present, else cpu)")
    return loop


def add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser("train", help="training loops")
    loops = train.add_subparsers(dest="loop", required=True)
    sft = add_loop(
        loops,
        "sft",
        "supervised fine-tuning on chat data (the SFT format)",
        "Train with a YAML recipe (see configs/recipes/).",
    )
    sft.add_argument("--model", help="fine-tune this Hugging Face folder (or builtin) instead")
    sft.add_argument("--init", type=Path, help="or train a new model of these sizes (YAML)")
    sft.add_argument(
        "--token-budget", type=int, help="train on about this many tokens instead of max_steps"
    )
    prm = add_loop(
        loops,
        "prm",
        "a process reward model from stepwise labels (tts data shepherd)",
        "Train a token-classification or implicit PRM with a YAML recipe (see "
        "configs/recipes/prm.yaml); OUT/final loads as --prm.",
    )
    prm.add_argument("--data", type=Path, help="override the recipe's stepwise-label file")
    prm.add_argument("--model", help="backbone: a causal LM folder or builtin")
    prm.add_argument("--targets", choices=["hard", "soft"], help="train on labels or scores")
    prm.add_argument(
        "--objective",
        choices=["classification", "implicit"],
        help="a step head, or an implicit PRM (likelihood ratio against the start model)",
    )
    prm.add_argument("--input", choices=["trl", "policy"], help="TRL's input or the policy's text")
    prm.add_argument(
        "--value",
        choices=["sum", "min"],
        help="implicit PRM: the solution's log-ratio so far, or its worst step's (min form)",
    )
    grpo = add_loop(
        loops,
        "grpo",
        "reinforcement learning with verifiable rewards (GRPO, Dr. GRPO, DAPO)",
        "Train with GRPO from a YAML recipe (see configs/recipes/grpo.yaml): rollouts by the "
        "native engine in process, rule rewards, group-relative advantages; OUT/log.jsonl per "
        "step (tts train plot draws it), OUT/final at the end.",
    )
    grpo.add_argument("--model", help="start from this causal LM folder or builtin")
    grpo.add_argument("--dataset", help="override the recipe's training problems")
    plot = loops.add_parser(
        "plot",
        help="draw a training log's metrics against steps",
        description="Draw metrics of OUT/log.jsonl (any loop's) against steps, one panel each.",
    )
    plot.add_argument("log", type=Path, help="a log.jsonl, or the run folder holding it")
    plot.add_argument(
        "--metrics",
        help="comma-separated keys of the log (default: whichever of reward, accuracy, "
        "length_mean, loss and the eval metrics it has)",
    )
    plot.add_argument("--out", type=Path, help="PNG to write (default: beside the log)")


def run(args: argparse.Namespace) -> None:
    if args.command == "bench":
        from tts.bench import BenchConfig, format_table, run_bench

        options = {k: v for k, v in vars(args).items() if k != "command"}
        options["options"] = dict(args.options)
        try:
            config = BenchConfig(**options)
        except ValidationError as error:
            raise invalid_options("bench options", error) from None
        print(format_table(run_bench(config)))
        print(f"results: {config.out / 'results.jsonl'}  summary: {config.out / 'summary.json'}")
        if config.plot:
            print(f"figure: {config.out / 'accuracy.png'}")
    elif args.command == "compare":
        from tts.bench import BenchConfig
        from tts.bench.compare import run_compare
        from tts.bench.report import Table

        options = {k: v for k, v in vars(args).items() if k not in ("command", "strategies")}
        try:
            base = BenchConfig(**options)
        except ValidationError as error:
            raise invalid_options("compare options", error) from None
        # Each row as soon as its run is done: a long comparison shows results as it goes.
        result = run_compare(base, args.strategies, lambda line: print(line, flush=True))
        print(Table.NOTE)
        for line in result["skipped"]:
            print(f"skipped: {line}")
        print(f"figure: {base.out / 'compare.png'}  table: {base.out / 'compare.md'}")
    elif args.command == "serve":
        # FastAPI and uvicorn are the server extra's: import them only when serving.
        from tts.servers.config import load_config
        from tts.servers.serve import serve

        options = {k: v for k, v in vars(args).items() if k not in ("command", "config")}
        config = load_config(args.config, **options)
        serve(config)
    elif args.command == "data" and args.kind in DATA_JOBS:
        values = {k: v for k, v in vars(args).items() if k not in ("command", "kind")}
        run_data_job(args.kind, values)
    elif args.command == "data":
        from tts.data.synthetic import write_sft

        written = write_sft(
            args.out, args.task, args.difficulty, args.n, args.style, args.seed, args.error_rate
        )
        print(f"{written} new problems in {args.out}")
    elif args.command == "train" and args.loop == "prm":
        from tts.train.prm import load_config, train_prm

        overrides = {k: v for k, v in vars(args).items() if k not in ("command", "loop", "recipe")}
        for key, value in train_prm(load_config(args.recipe, **overrides)).items():
            print(f"{key}: {value}")
    elif args.command == "train" and args.loop == "grpo":
        from tts.train.grpo import load_config, train_grpo

        overrides = {k: v for k, v in vars(args).items() if k not in ("command", "loop", "recipe")}
        for key, value in train_grpo(load_config(args.recipe, **overrides)).items():
            print(f"{key}: {value}")
    elif args.command == "train" and args.loop == "plot":
        from tts.train.curves import plot_log

        print(plot_log(args.log, args.metrics.split(",") if args.metrics else None, args.out))
    elif args.command == "train":
        from tts.train.loop import read_yaml
        from tts.train.sft import load_config, train_sft

        config = load_config(
            args.recipe,
            out=args.out,
            max_steps=args.max_steps,
            token_budget=args.token_budget,
            device=args.device,
            model=args.model,
            init=read_yaml(args.init) if args.init else None,
        )
        print(train_sft(config))
    elif args.command == "model":
        from tts.models.tiny import build_tiny_model

        print(build_tiny_model(args.out, family=args.family, seed=args.seed))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tts", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tts {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_bench(commands)
    add_compare(commands)
    add_model(commands)
    add_serve(commands)
    add_train(commands)
    add_data(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except TTSError as error:
        sys.exit(f"tts: error: {error}")
    except KeyboardInterrupt:
        sys.exit("tts: interrupted; run the same command again to continue")


if __name__ == "__main__":
    main()
