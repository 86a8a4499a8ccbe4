"""The `tts` command as a user meets it: help, argument errors, and what building it imports.

How fast it answers is measured by benchmarks/cli_startup.py, never here: a timed test fails
on a loaded machine. What makes it fast is checked instead: no heavy import before a command
runs.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tts.cli import STRATEGY_NAMES, build_parser, main

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
    "args", [["bench", "--out", "x", "--bogus"], ["data", "pairs", "--out", "x", "--bogus"]]
)
def test_a_bad_flag_is_exit_2_and_one_error_line(args):
    result = tts(*args)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == ["tts: error: unrecognized arguments: --bogus"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["--help"], ["bench", "--help"], ["bench", "--bogus"]])
def test_help_and_argument_errors_import_neither_torch_nor_transformers(args):
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


def test_importing_the_cli_imports_no_torch():
    script = "import sys, tts.cli; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.strip() == "False"


def test_the_help_names_the_strategies_tts_search_has():
    from tts.search import STRATEGIES

    assert tuple(STRATEGIES) == STRATEGY_NAMES


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
    # The options' entry, after the usage line: it names the remote backend among the choices.
    entry = capsys.readouterr().out.split("--backend BACKEND")[-1].split("\n  -")[0]
    assert "remote" in entry


def test_a_tokenizer_for_a_local_backend_is_refused_in_one_line(tmp_path):
    with pytest.raises(SystemExit) as exit:
        main(["bench", "--tokenizer", str(tmp_path), "--limit", "1", "--out", str(tmp_path / "o")])
    assert str(exit.value).startswith("tts: error: a tokenizer folder is for the remote backend")
