"""How long `tts` takes to answer `--help` and a bad flag: wall time of a fresh process.

Each command runs RUNS times in a new interpreter; the median is reported beside two
references: a bare interpreter (the floor) and `import tts.search` (torch, transformers and
the verifiers: what every command paid before the CLI imported them lazily). `tts --help` and
a command whose config is light (`tts data synth`) import none of it; a command's flags come
from its config, so `tts bench --help` and `tts bench --bogus` pay the import of BenchConfig's
module, as every command whose config imports the engine does. Then what `import tts.cli`
spends its time on, from `python -X importtime`.

    python benchmarks/cli_startup.py
"""

import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks/results/cli_startup.json"
RUNS = 5  # fresh processes per command; the median is reported
TOP = 8  # modules listed from the import-time profile
TTS = [shutil.which("tts")] if shutil.which("tts") else [sys.executable, "-m", "tts.cli"]
COMMANDS = {
    "tts --help": [*TTS, "--help"],
    "tts data synth --help": [*TTS, "data", "synth", "--help"],
    "tts bench --help": [*TTS, "bench", "--help"],
    "tts bench --bogus": [*TTS, "bench", "--out", "unused", "--bogus"],
    "python (bare interpreter)": [sys.executable, "-c", "pass"],
    "python -c 'import tts.search'": [sys.executable, "-c", "import tts.search"],
}


def median_seconds(command: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def import_profile() -> list[dict]:
    """The direct imports of `tts.cli` that take longest, each with its own imports inside
    (cumulative microseconds from `-X importtime`, which prints a module after its imports)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import tts.cli"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    children: list[dict] = []
    for line in result.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        row = {"module": name.strip(), "seconds": int(parts[1]) / 1e6}
        if depth == 0 and row["module"] == "tts.cli":
            return sorted(children, key=lambda r: -r["seconds"])[:TOP] + [row]
        if depth == 0:
            children = []
        elif depth == 1:
            children.append(row)
    return []


def main() -> None:
    medians = {name: median_seconds(command) for name, command in COMMANDS.items()}
    profile = import_profile()
    print(f"{'command':32} {'median s':>9}   ({RUNS} runs each)")
    for name, seconds in medians.items():
        print(f"{name:32} {seconds:9.3f}")
    print("\nimport tts.cli: its largest direct imports, then its total")
    for row in profile:
        print(f"  {row['module']:30} {row['seconds']:7.3f} s")
    OUT.write_text(
        json.dumps(
            {
                "runs": RUNS,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                f"{platform.python_version()}, 1-minute load {os.getloadavg()[0]:.1f}",
                "median_seconds": medians,
                "import_tts_cli_top": profile,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"\n{OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
