"""Run a document's console blocks as a reader would, and compare what they print.

Every ```console block of a Markdown file is read in order. A ``$ command`` line
runs in bash, in one fresh folder per document, with this environment's ``zoo``
first on PATH; the lines after it (up to the next ``$``) are what it must print,
stdout and stderr together. A code block whose first line is ``# PATH`` is a file
the reader writes (the guide's ``my-models/...``, ``nets.py``): it is written to
the folder when the run reaches it. ``pip install -e FOLDER`` installs into a
private site folder on PYTHONPATH, never into this environment.

What differs from machine to machine or run to run is masked on both sides
before the comparison: durations, sha256 prefixes, the digits of errors below
1e-4, benchmark rates, runs of spaces, the finishing order of ``--jobs`` lines.
An expected line ``...`` stands for any number of lines.
A console block right after a ``<!-- on: FACT=VALUE -->`` line shows what one
kind of machine prints and runs only where that holds; the facts are in
``machine_facts`` (``openvino-default``: the precision OpenVINO's CPU plugin
computes float32 files in, ``f32`` or ``bf16``). Its figures are that machine's
(another of the kind may round otherwise): it is compared up to them. A variant's
speed verdict (``warning   the int8 file is slower ...``) and a bench timing's
"no measurement" warning depend on the processor and its load, and are left out on both sides; the speed line itself is compared, its ratios masked.

After a change to what zoo prints, re-record a document's outputs and read the diff::

    python tests/doc_console.py --record README.md

It rewrites the output of every command that printed something else, except
where the document shows ``...`` (those it lists, to edit by hand).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from installing import pip_install

REPO = Path(__file__).resolve().parents[1]
FILE_HEADER = re.compile(r"^# ([\w./-]+\.\w+)\n")
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
ON_MACHINE = re.compile(r"<!-- on: ([\w-]+)=([\w-]+) -->\n$")


def machine_facts() -> dict[str, str]:
    """What decides which of a document's machine-specific blocks runs here."""
    facts = {}
    try:
        import openvino
    except ImportError:
        return facts
    precision = str(openvino.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))
    facts["openvino-default"] = "bf16" if "bfloat16" in precision else "f32" if "f32" in precision or "float32" in precision else precision
    return facts


@dataclass
class Step:
    """A file to write, or a command and what the document says it prints."""

    where: int  # line in the document
    command: str = ""
    on: tuple[str, str] | None = None  # (fact, value): the kind of machine whose output the block shows
    expected: list[str] = field(default_factory=list)
    file: str = ""
    text: str = ""


def document_steps(document: Path) -> list[Step]:
    steps: list[Step] = []
    text = document.read_text()
    for match in BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        language, body = match.group(1), match.group(2)
        if language != "console":
            if header := FILE_HEADER.match(body):
                steps.append(Step(line, file=header.group(1), text=FILE_HEADER.sub("", body)))
            continue
        on = ON_MACHINE.search(text, 0, match.start())
        condition = (on.group(1), on.group(2)) if on and on.end() == match.start() else None
        current = None  # output shown before a block's first command belongs to no command
        for offset, row in enumerate(body.splitlines()):
            if row.startswith("$ "):
                current = Step(line + 1 + offset, command=row[2:], on=condition)
                steps.append(current)
            elif current is not None:
                current.expected.append(row)
    return steps


_MASKS = [
    (re.compile(r"\bmax rel \d\.\d+e[+-]\d+"), "max rel <r>"),  # relative to values near zero: rounding noise, and the CPU's
    (re.compile(r" \(\d+:\d\d:\d\d\)"), ""),  # pytest's "in 72.10s (0:01:12)"
    (re.compile(r"\b\d+(?:\.\d+)?\s?(?:s|ms|µs|ns)\b"), "<t>"),
    (re.compile(r"\b[0-9a-f]{16}…"), "<sha>…"),
    (re.compile(r"\b\d(?:\.\d+)?e-(?:0[5-9]|[1-9]\d)\b"), "<tiny>"),
    (re.compile(r"\b0\.00e\+00\b"), "<tiny>"),
    (re.compile(r"\bp99 0(?= |$)"), "p99 <tiny>"),
    (re.compile(r"\b\d+(?:\.\d+)?[kM]\b"), "<rate>"),
    (re.compile(r"\b\d+\.\d+×(?=[ ,)]|$)"), "<x>×"),
    (re.compile(r"at least \d+ calls"), "at least <n> calls"),
    # int8 kernels differ between processors (the README says so): a variant's measured figures
    (re.compile(r"(p99 abs|argmax|threshold|loss|agrees with PyTorch on) [+-]?\d+(?:\.\d+)?(?:e[+-]\d+)?%?"), r"\1 <v>"),
    (re.compile(r" \(\d+ of \d+ rows a tie\)"), ""),
    (re.compile(r"(loss <v>\s+)below these, labels judge$"), r"\1ok"),  # a stand-in's verdict, where labels decide
    # trained in the document's own chain: a loss's last digits are the CPU's
    (re.compile(r"\d+\.\d+ \(closed form \d+\.\d+\)"), "<loss> (closed form <loss>)"),
    (re.compile(r"\b(torch|onnx|int8|fp16) \d+\.\d+(?=\s|$)"), r"\1 <loss>"),
    (re.compile(r"/tmp/[\w./-]+/"), "<tmp>/"),
    (re.compile(r"(\.pt2  )\d+(?:\.\d+)? kB"), r"\1<size>"),  # a torch.export archive's size varies from run to run
    (re.compile(r" {2,}"), "  "),
]


_BENCH_ROW = re.compile(r"^(batch=\d+(?:, \w+=\d+)*)\s+(.*×)\s*$")  # a zoo bench row: every figure is a timing


_UNRELIABLE = re.compile(r"\((\d+(?:\.\d+)?×)\?\)")  # a speed-up in brackets: too noisy to compare, a timing verdict too


def mask(line: str) -> str:
    line = _UNRELIABLE.sub(r"\1", line)
    if row := _BENCH_ROW.match(line):
        return f"{row.group(1)}  " + re.sub(r"\d+(?:\.\d+)?(?: ?(?:µs|ms|ns|s|k|M)\b)?", "<n>", re.sub(r" {2,}", "  ", row.group(2)))
    for pattern, replacement in _MASKS:
        line = pattern.sub(replacement, line)
    return line.rstrip()


def _unordered_progress(lines: list[str]) -> list[str]:
    # --jobs N prints "[i/n] NAME STATUS" as workers finish: compare them as a set
    out: list[str] = []
    run: list[str] = []
    for line in [*lines, ""]:
        if re.match(r"^\[\d+/\d+\] ", line):
            run.append(re.sub(r"^\[\d+/", "[?/", line))
            continue
        out.extend(sorted(run))
        run = []
        out.append(line)
    return out[:-1]


# verdicts on a timing: a variant slower than its float file, a bench timing too noisy to compare
_SPEED_VERDICT = re.compile(r"^\s+warning\s+the \w+ file is (?:slower|no faster) than|^warning: .*its speed-up \(in brackets\) is no measurement")


def _compared(lines: list[str]) -> list[str]:
    return _unordered_progress([mask(x) for x in lines if not _SPEED_VERDICT.match(x)])


_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def matches(expected: list[str], actual: list[str], numbers: bool = True) -> bool:
    """Whether ``actual`` prints what ``expected`` shows; ``numbers=False``: up to the
    figures (a block of one kind of machine, whose figures are that machine's)."""
    def compared(lines: list[str]) -> list[str]:
        return [line if numbers else _NUMBER.sub("<n>", line) for line in _compared(lines)]

    pattern = "".join(r"(?:[^\n]*\n)*?" if line.strip() == "..." else re.escape(line) + r"\n" for line in compared(expected))
    return re.fullmatch(pattern, "".join(f"{line}\n" for line in compared(actual))) is not None


class Reader:
    """A fresh folder, a private site folder, and the commands run so far."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder / "work"
        self.site = folder / "site"
        self.folder.mkdir()
        self.site.mkdir()
        self.installed: set[str] = set()
        (self.folder / "examples").symlink_to(REPO / "examples")
        env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "ZOO_LOAD_PLUGINS", "COLUMNS"}}
        self.env = {**env, "PYTHONPATH": str(self.site), "PATH": f"{Path(sys.executable).parent}:{env['PATH']}",
                    "NO_COLOR": "1", "TERM": "dumb"}

    def write(self, step: Step) -> None:
        path = self.folder / step.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(step.text)

    def run(self, command: str) -> tuple[int, list[str]]:
        words = shlex.split(command, comments=True)
        if words[:3] == ["pip", "install", "-e"]:
            if words[3] not in self.installed:  # installed again: nothing changes for the reader
                pip_install(self.folder / words[3], self.site)
                self.installed.add(words[3])
            return 0, []
        if "zsh_source" in command or "fish_source" in command:
            return 0, []  # another shell's set-up line
        if "<TAB>" in command:  # what the shell's completion offers, through click's own protocol
            typed = command.split("<TAB>")[0]
            env = {**self.env, "_ZOO_COMPLETE": "bash_complete", "COMP_WORDS": typed, "COMP_CWORD": str(len(typed.split()) - 1)}
            done = subprocess.run(["zoo"], cwd=self.folder, env=env, capture_output=True, text=True, timeout=120)
            names = [row.split(",", 1)[1] for row in done.stdout.splitlines() if "," in row]
            return done.returncode, ["  ".join(names)]
        done = subprocess.run(["bash", "-c", command], cwd=self.folder, env=self.env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=300)
        return done.returncode, done.stdout.splitlines()


def run_document(document: Path, folder: Path, skip: set[str] = frozenset(), record: bool = False) -> list[str]:
    """Every step of ``document`` in order; one message per command whose output differs.
    ``record``: write what each such command printed into the document instead
    (not where it shows ``...``: those stay problems)."""
    reader = Reader(folder)
    facts = machine_facts()
    problems: list[str] = []
    rewrites: list[tuple[Step, list[str]]] = []
    for step in document_steps(document):
        if step.file:
            reader.write(step)
            continue
        if any(s in step.command for s in skip):
            continue
        if step.on is not None and facts.get(step.on[0]) != step.on[1]:
            continue  # another kind of machine's output
        code, actual = reader.run(step.command)
        # a command shown without output must succeed; one shown with it must print that
        if (step.expected and not matches(step.expected, actual, numbers=step.on is None)) or (not step.expected and code != 0):
            if record and step.expected and all(line.strip() != "..." for line in step.expected):
                rewrites.append((step, actual))
                continue
            problems.append(f"{document.name}:{step.where}: $ {step.command}\n--- the document shows\n"
                            + "\n".join(step.expected) + "\n--- it printed\n" + "\n".join(actual))
    if rewrites:
        lines = document.read_text().split("\n")
        for step, actual in reversed(rewrites):  # from the end, so earlier line numbers hold
            lines[step.where : step.where + len(step.expected)] = actual
        document.write_text("\n".join(lines))
    return problems


if __name__ == "__main__":
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description="Run a document's console blocks; --record rewrites what they print.")
    parser.add_argument("document", type=Path)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        found = run_document(args.document.resolve(), Path(folder), record=args.record)
    print("\n\n".join(found) or f"every console block of {args.document} prints what it shows")
    sys.exit(1 if found else 0)
