"""Report sections, figures and REPORT.md assembly.

Every experiment gets a :class:`RunContext` for one *part* (e.g. ``cifar100``). It writes
its figures (PNG), raw numbers (JSON) and Markdown sections into ``<out>/<part>/``; the
sections are stored as ``sections.json`` so that ``assemble_report`` can rebuild
``REPORT.md`` from every part that has run, ordered Q1 … Q18, without re-running anything.

Why files rather than return values: a long part (CIFAR-100, 20 epochs × 3 models) can be
re-run alone and the report re-assembled from what the other parts left on disk.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import inspect
import json
import platform
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

SECTIONS_FILE = "sections.json"
RESULTS_FILE = "results.json"


@dataclasses.dataclass(frozen=True)
class Section:
    """One answer in the report: a question id (``"Q14"``), a title and a Markdown body."""

    question: str
    title: str
    body: str
    part: str = ""
    order: int = 0  # tie-break when one part writes several sections for one question

    @property
    def sort_key(self) -> tuple[int, str, int]:
        return (question_number(self.question), self.part, self.order)


def question_number(question: str) -> int:
    """``"Q14"`` → 14; ``"Q3c"`` → 3. Unknown ids sort last."""
    m = re.match(r"Q(\d+)", question)
    if not m:
        raise ValueError(f"question id must look like 'Q<number>…', got {question!r}")
    return int(m.group(1))


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/jax scalars and arrays (recursively) into plain JSON types."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):  # numpy or jax array / scalar
        arr = np.asarray(obj)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def fmt(x: float, digits: int = 3) -> str:
    """Format a number for prose: fixed for moderate values, scientific otherwise."""
    x = float(x)
    if x != 0 and (abs(x) < 10 ** (-digits) or abs(x) >= 10**6):
        return f"{x:.{digits - 1}e}"
    return f"{x:.{digits}f}"


def source_of(obj: Callable[..., Any] | type) -> str:
    """The source code of a function or class, quoted at run time (Q12/Q13 show the real code)."""
    return inspect.getsource(obj).rstrip()


def code_block(text: str, lang: str = "python") -> str:
    return f"```{lang}\n{text.rstrip()}\n```"


def quote_sources(*objs: Callable[..., Any] | type) -> str:
    """Code blocks with the source of each function/class, as the run used them."""
    return "\n\n".join(code_block(source_of(o)) for o in objs)


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


@dataclasses.dataclass
class RunContext:
    """Where one part of the problem set writes its outputs, and how it should run.

    Attributes:
      out_dir: the run's root directory (default ``results/``); this part writes under
        ``out_dir / part``.
      part: the part's name as used on the command line (``"cifar100"``).
      quick: minutes-on-a-laptop settings instead of the full protocol.
      data_dir: where data sets live (``--data-dir`` / ``JAXHW_DATA_DIR``), or None.
      seed: the base PRNG seed.
      resume: continue from checkpoints when they exist.
      splits: an ``.npz`` of explicit train/val/test index arrays (parts that support it).
    """

    out_dir: Path
    part: str
    quick: bool = False
    data_dir: Path | None = None
    seed: int = 0
    resume: bool = False
    splits: Path | None = None
    seconds: float | None = None
    _sections: list[Section] = dataclasses.field(default_factory=list)
    _results: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.part_dir.mkdir(parents=True, exist_ok=True)

    @property
    def part_dir(self) -> Path:
        return self.out_dir / self.part

    @property
    def checkpoint_dir(self) -> Path:
        return self.part_dir / "checkpoints"

    def log(self, msg: str) -> None:
        print(f"[{self.part}] {msg}", flush=True)

    def save_json(self, name: str, obj: Any) -> Path:
        """Write raw numbers to ``<part>/<name>.json`` and remember them in results.json."""
        path = self.part_dir / (name if name.endswith(".json") else f"{name}.json")
        path.write_text(json.dumps(to_jsonable(obj), indent=2))
        self._results[Path(name).stem] = str(path.relative_to(self.out_dir))
        return path

    def save_figure(self, fig: Any, name: str, dpi: int = 120) -> str:
        """Save a matplotlib figure as PNG; returns the path relative to ``out_dir``."""
        import matplotlib.pyplot as plt

        path = self.part_dir / (name if name.endswith(".png") else f"{name}.png")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        return str(path.relative_to(self.out_dir))

    def add_section(self, question: str, title: str, body: str) -> Section:
        """Add one answer; written to disk at once so an interrupted part keeps what it has."""
        question_number(question)  # validate early
        order = sum(s.question == question for s in self._sections)
        section = Section(question, title, body.strip() + "\n", self.part, order)
        self._sections = [s for s in self._sections if (s.question, s.order) != (question, order)]
        self._sections.append(section)
        self._flush()
        return section

    def finish(self, seconds: float) -> None:
        """Record the part's wall time (shown in REPORT.md's header table)."""
        self.seconds = float(seconds)
        self._flush()

    def _flush(self) -> None:
        payload = {
            "part": self.part,
            "quick": self.quick,
            "seconds": self.seconds,
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "platform": platform_summary(),
            "sections": [dataclasses.asdict(s) for s in self._sections],
            "results": self._results,
        }
        (self.part_dir / SECTIONS_FILE).write_text(json.dumps(payload, indent=2))


def platform_summary() -> dict[str, str]:
    import jax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": str(len(jax.devices())),
        "machine": platform.machine(),
    }


def _read_sections_file(path: Path, warn: bool = True) -> tuple[dict[str, Any], list[Section]] | None:
    """One part's ``sections.json``, or None (with a one-line warning naming it) if it is damaged."""
    try:
        payload = json.loads(path.read_text())
        return {k: v for k, v in payload.items() if k != "sections"}, [Section(**s) for s in payload["sections"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        if warn:
            import sys

            print(f"jaxhw: {path} is damaged ({type(err).__name__}: {str(err)[:120]}); part "
                  f"{path.parent.name!r} is left out of the report — re-run it with "
                  f"'jaxhw run {path.parent.name} --out {path.parent.parent}' plus the options it ran with "
                  f"(e.g. --quick)", file=sys.stderr)
        return None


def damaged_section_files(out_dir: Path) -> list[Path]:
    return [p for p in sorted(Path(out_dir).glob(f"*/{SECTIONS_FILE}")) if _read_sections_file(p, warn=False) is None]


def load_sections(out_dir: Path) -> tuple[list[Section], list[dict[str, Any]]]:
    """All sections written by any part under ``out_dir`` (and each part's header info); a damaged
    ``sections.json`` is named on stderr and skipped, so one bad file never hides the other parts."""
    sections: list[Section] = []
    parts: list[dict[str, Any]] = []
    for path in sorted(Path(out_dir).glob(f"*/{SECTIONS_FILE}")):
        read = _read_sections_file(path)
        if read is not None:
            parts.append({"part": path.parent.name, **read[0]})
            sections += read[1]
    return sorted(sections, key=lambda s: s.sort_key), parts


def assemble_report(out_dir: Path, title: str = "jaxhw report", failed: Sequence[str] = ()) -> Path:
    """Write ``REPORT.md`` with one heading per question, Q1 … Q18 in order.

    ``failed`` names parts whose latest run failed: their sections (if any) come from an earlier
    run, and the report says so at the top.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections, parts = load_sections(out_dir)
    lines = [f"# {title}", ""]
    damaged = damaged_section_files(out_dir)
    if damaged:
        lines += [
            f"> **Left out: {', '.join(f'`{p.relative_to(out_dir)}`' for p in damaged)} could not be read.** "
            "Re-run those parts to restore their sections.",
            "",
        ]
    if failed:
        lines += [
            f"> **The latest run of {', '.join(failed)} failed.** Sections of those parts shown below, if any, "
            "come from an earlier run; see the console output of the failed run.",
            "",
        ]
    lines.append(
        "Every number below was computed by the code in this repository when the part that "
        "reports it last ran (table below); nothing is typed in, except reference numbers that "
        "are labelled as quoted from elsewhere. Parts and their settings:"
    )
    lines.append("")
    lines.append(
        md_table(
            ["part", "profile", "wall time (last invocation)", "finished (UTC)", "backend", "devices", "jax"],
            [
                [
                    p["part"],
                    "quick" if p.get("quick") else "full",
                    f"{p['seconds'] / 60:.1f} min" if p.get("seconds") else "unfinished",
                    p.get("finished", "?"),
                    p.get("platform", {}).get("backend", "?"),
                    p.get("platform", {}).get("devices", "?"),
                    p.get("platform", {}).get("jax", "?"),
                ]
                for p in parts
            ],
        )
    )
    lines.append("")
    current = None
    for s in sections:
        if s.question != current:
            lines += [f"## {s.question}. {s.title}", ""]
            current = s.question
        elif s.title:
            lines += [f"### {s.title}", ""]
        lines += [s.body.rstrip(), ""]
    path = out_dir / "REPORT.md"
    path.write_text("\n".join(lines))
    return path
