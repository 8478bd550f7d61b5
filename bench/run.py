"""Run every benchmark and print one table.

    python bench/run.py [--quick] [--repeats N] [--clock cpu|wall] [--only core,sdk,...] [--write-readme]

Each benchmark runs in its own process (SDK patches, LlamaIndex dispatcher handlers and tracemalloc
stay out of the others) and prints its own table; this script then prints them all as one.
`--write-readme` also writes the table, the machine and the command into bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _common import Row, load_rows, machine_info, markdown_table

HERE = Path(__file__).resolve().parent
BENCHES = ("core", "estimate", "sdk", "langchain", "llamaindex")
README = HERE / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _run_one(name: str, passthrough: list[str], json_path: str) -> list[Row]:
    script = HERE / f"bench_{name}.py"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(script), *passthrough, "--json", json_path], check=False)
    print(f"[{name}: {time.monotonic() - started:.0f} s, exit {proc.returncode}]\n", flush=True)
    if proc.returncode != 0:
        return [Row(bench=f"{name}", variant=f"failed: exit code {proc.returncode}", value=None, unit="")]
    return load_rows(json_path)


def _write_readme(table: str, command: str) -> None:
    info = "\n".join(f"- {key}: {value}" for key, value in machine_info().items())
    block = (f"{BEGIN}\nProduced by `{command}` on {time.strftime('%Y-%m-%d %H:%M %Z')}:\n\n{info}\n\n"
             f"{table}\n{END}")
    text = README.read_text(encoding="utf-8") if README.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    README.write_text(text, encoding="utf-8")
    print(f"wrote {README}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {BENCHES}")
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args(argv)
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {BENCHES}")
    passthrough = ["--clock", args.clock]
    if args.quick:
        passthrough.append("--quick")
    if args.repeats is not None:
        passthrough += ["--repeats", str(args.repeats)]

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tokenspy-bench-") as tmp:
        for name in selected:
            rows += _run_one(name, passthrough, os.path.join(tmp, f"{name}.json"))
    print("## All benchmarks\n")
    for key, value in machine_info().items():
        print(f"{key}: {value}")
    print(f"clock: {args.clock}\n")
    table = markdown_table(rows)
    print(table)
    if args.write_readme:
        command = " ".join(["python bench/run.py", *(argv if argv is not None else sys.argv[1:])])
        _write_readme(table, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
