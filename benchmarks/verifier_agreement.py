"""How often each answer checker agrees with the labelled table, per kind, and what a call costs.

Checkers: plain math-verify, `verify(parse("$gold$"), parse("$pred$"))` as its README shows;
our `math_equal` called from the main thread (SIGALRM bound); our `math_equal` called from
another thread (worker-process bound). Each runs in a fresh interpreter so no checker inherits
another's warm caches.

    python benchmarks/verifier_agreement.py
"""

import json
import pathlib
import subprocess
import sys
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CASES = ROOT / "tests/verifiers/math_equal_cases.jsonl"  # the labelled answer pairs
OUT = ROOT / "benchmarks/results/verifier_agreement.json"
CHECKERS = ("math-verify", "ours", "ours-thread")


def run_checker(name: str, cases: list[dict]) -> list[dict]:
    """Verdict and seconds for every case, judged by `name` in this process."""
    if name == "math-verify":
        from math_verify import parse, verify

        def judge(pred: str, gold: str) -> bool:
            return verify(parse(f"${gold}$"), parse(f"${pred}$"))
    else:
        sys.path.insert(0, str(ROOT))
        from tts.verifiers.equal import math_equal as judge

    def judge_all() -> list[dict]:
        rows = []
        for case in cases:
            start = time.perf_counter()
            verdict = judge(case["pred"], case["gold"])
            rows.append({"verdict": bool(verdict), "seconds": time.perf_counter() - start})
        return rows

    if name != "ours-thread":
        return judge_all()
    rows: list[dict] = []
    thread = threading.Thread(target=lambda: rows.extend(judge_all()))
    thread.start()
    thread.join()
    return rows


def main() -> None:
    cases = [json.loads(line) for line in CASES.read_text().splitlines() if line.strip()]
    if len(sys.argv) == 3 and sys.argv[1] == "--only":
        print(json.dumps(run_checker(sys.argv[2], cases)))
        return
    rows = {}
    for name in CHECKERS:
        done = subprocess.run(
            [sys.executable, __file__, "--only", name], capture_output=True, text=True, check=True
        )
        rows[name] = json.loads(done.stdout.strip().splitlines()[-1])

    kinds = sorted({case["kind"] for case in cases})
    table = {}
    for kind in [*kinds, "overall"]:
        picked = [i for i, c in enumerate(cases) if kind in ("overall", c["kind"])]
        table[kind] = {"n": len(picked)} | {
            name: sum(rows[name][i]["verdict"] is cases[i]["equal"] for i in picked) / len(picked)
            for name in CHECKERS
        }
    seconds = {
        name: {
            "mean": sum(r["seconds"] for r in rows[name]) / len(cases),
            "max": max(r["seconds"] for r in rows[name]),
        }
        for name in CHECKERS
    }
    wrong = {
        name: [
            {**cases[i], "verdict": rows[name][i]["verdict"]}
            for i in range(len(cases))
            if rows[name][i]["verdict"] is not cases[i]["equal"]
        ]
        for name in CHECKERS
    }

    print(f"{'kind':<12}{'n':>5}" + "".join(f"{name:>13}" for name in CHECKERS))
    for kind, row in table.items():
        cells = "".join(f"{row[name]:>13.1%}" for name in CHECKERS)
        print(f"{kind:<12}{row['n']:>5}{cells}")
    for stat in ("mean", "max"):
        cells = "".join(f"{seconds[name][stat] * 1000:>11.2f}ms" for name in CHECKERS)
        print(f"{stat + ' call':<17}{cells}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {"cases": len(cases), "agreement": table, "seconds": seconds, "wrong": wrong}, indent=1
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
