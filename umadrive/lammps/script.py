"""Reading a LAMMPS input script just far enough to run it in two parts.

The bridge must attach its callback to ``fix external`` after the script has
created that fix and before the first MD step, and it must check the system
(units, types, atom count) at that point. So the script is split, line-exact,
before its first command that starts dynamics or control flow (``run``,
``minimize``, ``rerun``, ``label``, ``jump``): LAMMPS runs the first part, the
bridge checks and attaches, LAMMPS runs the rest. Both parts stay LAMMPS text;
nothing is rewritten.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from umadrive.lammps.errors import LammpsInputError

SPLIT_COMMANDS = frozenset({"run", "minimize", "rerun", "label", "jump"})
REQUIRED_FIX_LINE = "fix umadrive all external pf/callback 1 1"
_COMMENT = re.compile(r"#.*")


@dataclass(frozen=True)
class ExternalFix:
    """The script's ``fix ID group external mode args`` command.

    line: 1-based line number in the script.
    """

    fix_id: str
    group: str
    mode: str
    args: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class SplitScript:
    """A script cut before its first dynamics or control-flow command.

    setup: the text LAMMPS runs before the bridge attaches (box, atoms, fixes).
    dynamics: the rest, from the cut on ('' when the script never runs).
    split_line: 1-based line where ``dynamics`` starts (None when it is empty).
    external_fix: the ``fix external`` command found in ``setup``, if any.
    """

    setup: str
    dynamics: str
    split_line: int | None
    external_fix: ExternalFix | None


def _commands(lines: list[str]) -> list[tuple[int, list[str]]]:
    """(0-based first line, words) of each command, '&' continuations joined and
    '#' comments removed (a '#' inside quotes is rare in the commands we read)."""
    commands: list[tuple[int, list[str]]] = []
    pending: list[str] = []
    start = 0
    for index, raw in enumerate(lines):
        if not pending:
            start = index
        text = _COMMENT.sub("", raw).rstrip()
        if text.endswith("&"):
            pending.append(text[:-1])
            continue
        words = " ".join(pending + [text]).split()
        pending = []
        if words:
            commands.append((start, words))
    return commands


def _external_fix(start: int, words: list[str]) -> ExternalFix | None:
    if len(words) < 4 or words[0] != "fix" or words[3] != "external":
        return None
    mode = words[4] if len(words) > 4 else ""
    return ExternalFix(words[1], words[2], mode, tuple(words[5:]), start + 1)


def split_script(text: str) -> SplitScript:
    """Cut ``text`` (a LAMMPS input script) before its first dynamics or
    control-flow command and find its ``fix external`` line.

    Raises LammpsInputError when the setup part declares more than one
    ``fix external``.
    """
    lines = text.splitlines(keepends=True)
    commands = _commands(lines)
    cut = next((start for start, words in commands if words[0] in SPLIT_COMMANDS), None)
    setup_commands = [(s, w) for s, w in commands if cut is None or s < cut]
    fixes = [f for f in (_external_fix(s, w) for s, w in setup_commands) if f is not None]
    if len(fixes) > 1:
        where = ", ".join(f"line {f.line} (fix {f.fix_id})" for f in fixes)
        raise LammpsInputError(
            f"the script declares {len(fixes)} `fix external` commands ({where}); "
            f"the umadrive bridge serves exactly one: keep only `{REQUIRED_FIX_LINE}`"
        )
    cut_at = len(lines) if cut is None else cut
    return SplitScript(
        setup="".join(lines[:cut_at]),
        dynamics="".join(lines[cut_at:]),
        split_line=None if cut is None else cut + 1,
        external_fix=fixes[0] if fixes else None,
    )


def check_external_fix(script: SplitScript) -> ExternalFix:
    """The script's ``fix external``, checked to be ``all external pf/callback 1 1``
    and declared before the first run; LammpsInputError otherwise."""
    fix = script.external_fix
    where = (
        f"before the first run/minimize/label/jump command (line {script.split_line})"
        if script.split_line is not None
        else "in the script"
    )
    if fix is None:
        raise LammpsInputError(
            f"no `fix ... external` command found {where}; the umadrive bridge sets its "
            f"forces through one: add `{REQUIRED_FIX_LINE}` after the atoms are created"
        )
    if fix.group != "all" or fix.mode != "pf/callback" or fix.args != ("1", "1"):
        declared = " ".join(["fix", fix.fix_id, fix.group, "external", fix.mode, *fix.args])
        raise LammpsInputError(
            f"line {fix.line}: `{declared}` must act on all atoms at every step; "
            f"write `fix {fix.fix_id} all external pf/callback 1 1`"
        )
    return fix
