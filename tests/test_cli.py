"""The `tts` command as a user meets it: help, argument errors, the flags generated from each
command's config, the commands the documentation shows, and what building the parser imports.

How fast it answers is measured by benchmarks/cli_startup.py, never here: a timed test fails
on a loaded machine. What makes `tts --help` fast is checked instead: no heavy import before a
command is named. A command's own flags come from its config, whose module imports the engine,
so its `--help` and its argument errors pay that import.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from tts.cli import build_parser, main
from tts.commands.config_flags import (
    Flag,
    KeyValues,
    add_config_flags,
    config_values,
    make_config,
)
from tts.errors import TTSError

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("bench", "compare", "model", "serve", "train", "data")
REMOTE_COMMANDS = (
    ["bench"],
    ["compare"],
    ["serve"],
    ["data", "reject"],
    ["data", "difficulty"],
    ["data", "shepherd"],
    ["data", "pairs"],
)


def tts(*args: str) -> subprocess.CompletedProcess[str]:
    """`tts ARGS` in a fresh interpreter, as a shell runs it."""
    return subprocess.run(
        [sys.executable, "-m", "tts.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_command():
    result = tts("--help")
    assert result.returncode == 0
    listed = result.stdout.split("positional arguments:")[1]
    assert all(f"    {command} " in listed for command in COMMANDS)


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "--out", "x", "--bogus"],
        ["data", "pairs", "--out", "x", "--bogus"],
        ["data", "synth", "--out", "x", "--bogus"],
        ["train", "grpo", "--recipe", "x", "--bogus"],
        ["serve", "--bogus"],
        ["model", "tiny", "--out", "x", "--bogus"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_a_bad_flag_is_exit_2_and_one_error_line(args):
    result = tts(*args)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == ["tts: error: unrecognized arguments: --bogus"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["bogus"],
        ["data", "--help"],
        ["train", "--help"],
        ["data", "synth", "--bogus"],
        ["model", "tiny", "--help"],
        ["train", "plot", "--help"],
    ],
)
def test_help_and_argument_errors_import_neither_torch_nor_transformers(args):
    """Until a command whose config imports them is named."""
    script = (
        "import sys\n"
        "from tts.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('torch' in sys.modules, 'transformers' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.stderr.splitlines()[-1] == "False False"


def test_building_the_parser_imports_no_torch():
    script = "import sys, tts.cli; tts.cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "False"


def test_the_help_names_the_strategies_and_backends(capsys):
    from tts.engine import BACKENDS
    from tts.search import STRATEGIES

    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    usage = capsys.readouterr().out
    assert f"--strategy {'|'.join(STRATEGIES)}" in usage
    assert f"--backend {'|'.join(BACKENDS)}" in usage


@pytest.mark.parametrize("command", REMOTE_COMMANDS, ids=" ".join)
def test_every_command_whose_model_may_be_a_url_takes_a_tokenizer(command, tmp_path, capsys):
    url = "http://127.0.0.1:8000"
    args = [*command, "--backend", "remote", "--model", url, "--tokenizer", str(tmp_path)]
    if command[0] == "compare":
        args += ["--strategy", "majority"]
    if command[0] != "serve":
        args += ["--out", str(tmp_path / "out")]
    parsed = build_parser().parse_args(args)
    assert (parsed.backend, parsed.model, parsed.tokenizer) == ("remote", url, str(tmp_path))
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    assert "--backend native|hf|remote|vllm" in capsys.readouterr().out


def test_a_tokenizer_for_a_local_backend_is_refused_in_one_line(tmp_path):
    with pytest.raises(SystemExit) as exit:
        main(["bench", "--tokenizer", str(tmp_path), "--limit", "1", "--out", str(tmp_path / "o")])
    assert str(exit.value).startswith("tts: error: a tokenizer folder is for the remote backend")


class Toy(BaseModel):
    out: Path = Field(description="where")
    max_tokens: int = Field(16, ge=1, description="at most 50% of it")
    mode: Literal["fast", "slow"] = Field("fast", description="how")
    think: bool = Field(False, description="think first")
    stop: str = Field("\n\n", description="ends a step")
    limit: int | None = Field(None, description="first LIMIT")
    ns: list[int] = Field([1, 4], description="budgets")
    options: dict[str, object] = Field({}, description="the strategy's")
    nested: Toy | None = Field(None, description="a nested config")


def toy_parser(overriding: str | None = None, **flags: Flag | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy")
    add_config_flags(parser, Toy, flags, overriding)
    return parser


def test_each_scalar_field_is_a_flag_documented_by_the_field():
    parser = toy_parser()
    helps = {action.dest: action for action in parser._actions}
    assert set(helps) == {"help", "out", "max_tokens", "mode", "think", "stop", "limit"}
    assert helps["max_tokens"].option_strings == ["--max-tokens"]
    assert helps["max_tokens"].help == "at most 50%% of it (default: 16)"
    assert helps["mode"].choices == ("fast", "slow")
    assert helps["stop"].help == r"ends a step (default: '\n\n')"
    assert helps["out"].required and not helps["limit"].required
    assert helps["limit"].help == "first LIMIT"
    assert "at most 50% of it" in parser.format_help()
    args = parser.parse_args(["--out", "o", "--max-tokens", "8", "--think"])
    assert config_values(Toy, args) == {"out": "o", "max_tokens": "8", "think": True}
    assert make_config(Toy, args, "toy options").max_tokens == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "o", "--mode", "medium"])


def test_a_value_the_config_refuses_is_a_one_line_error():
    args = toy_parser().parse_args(["--out", "o", "--max-tokens", "0"])
    with pytest.raises(TTSError, match=r"^bad toy options: max_tokens: Input should be greater"):
        make_config(Toy, args, "toy options")


def test_a_command_spells_a_field_its_own_way():
    budgets = Flag("--n", type=lambda text: [int(n) for n in text.split(",")])
    options = Flag("-o", action=KeyValues, metavar="KEY=VALUE")
    parser = toy_parser(ns=budgets, options=options, mode=None)
    args = parser.parse_args(["--out", "o", "--n", "1,2", "-o", "k=4", "-o", "s=[a]", "-o", "t="])
    assert args.ns == [1, 2] and not hasattr(args, "mode")
    assert args.options == {"k": 4, "s": ["a"], "t": ""}
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "o", "-o", "novalue"])


def test_flags_over_a_file_require_nothing_and_turn_a_bool_off_too():
    parser = toy_parser(overriding="the recipe")
    assert config_values(Toy, parser.parse_args([])) == {}
    assert config_values(Toy, parser.parse_args(["--no-think"])) == {"think": False}
    helps = {action.dest: action.help for action in parser._actions}
    assert helps["max_tokens"].endswith("(default: the recipe's, else 16)")
    assert helps["out"] == "where (default: the recipe's)"


def test_nested_training_settings_stay_the_recipes_and_init_reads_its_file(tmp_path):
    grpo = build_parser().parse_args(["train", "grpo", "--recipe", "r.yaml", "--max-steps", "3"])
    assert grpo.max_steps == "3" and not hasattr(grpo, "loss") and not hasattr(grpo, "rewards")
    sizes = tmp_path / "sizes.yaml"
    sizes.write_text("num_layers: 1\n")
    sft = build_parser().parse_args(["train", "sft", "--recipe", "r.yaml", "--init", str(sizes)])
    assert sft.init == {"num_layers": 1}


def given(synopsis: str, side: int) -> list[str]:
    """The arguments of a synopsis with every optional part given: the `side` alternative of
    an `A | B`, and the first name of a value such as `native|hf|vllm`."""
    words = re.sub(r"\[([^]]*)\]", lambda group: group[1].split(" | ")[side], synopsis)
    return [w if w.startswith("-") else w.split("|")[0] for w in shlex.split(words)]


def documented_commands() -> list[tuple[str, list[str]]]:
    """(file, `tts` arguments) of every command a code block of README.md or docs/ shows; a
    synopsis twice, with the first alternatives and with the last."""
    commands = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks = re.findall(r"^```[a-z]*\n(.*?)^```", path.read_text(), re.M | re.S)
        for line in "\n".join(blocks).replace("\\\n", " ").splitlines():
            found = re.search(r"(?:^|&& )tts (.*)", line.strip())
            if not found or " ... " in f"{found[1]} ":
                continue
            synopsis = re.sub(r"\s#.*", "", found[1])
            for args in (given(synopsis, 0), given(synopsis, -1)):
                if (path.name, args) not in commands:
                    commands.append((path.name, args))
    return commands


def name(value: str | list[str]) -> str:
    return value if isinstance(value, str) else " ".join(value[:2])


@pytest.mark.parametrize("path, args", documented_commands(), ids=name)
def test_every_documented_command_parses(path, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("SIZES.yaml").write_text("{}\n")  # training.md's `--init SIZES.yaml`, read as parsed
    build_parser().parse_args(args)
