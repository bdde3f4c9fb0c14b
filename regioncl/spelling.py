"""How a person may spell what they ask for: ``--x-y`` or ``--x_y`` alike, and a suggestion for a near miss."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


def underscored(argv: Iterable[str]) -> list[str]:
    """``--run.output-dir x`` → ``--run.output_dir x``: the option names of a command line with their
    dashes as underscores, values untouched, so that every command takes ``--x-y`` and ``--x_y`` alike."""
    out = []
    for arg in argv:
        if arg.startswith("--") and len(arg) > 2:
            name, eq, value = arg.partition("=")
            arg = "--" + name[2:].replace("-", "_") + eq + value
        out.append(arg)
    return out


def did_you_mean(message: str, options: Iterable[str]) -> str:
    """``message`` with a suggestion for each unrecognised ``--option`` it names that is close to a known one."""
    known = sorted({o for o in options if o.startswith("--")})
    named = re.findall(r"(--[\w.\-]+)", message.split("rgument", 1)[-1]) if "nrecognized argument" in message else []
    hints = []
    for option in dict.fromkeys(named):
        if option in known:
            continue
        close = difflib.get_close_matches(underscored([option])[0], known, n=1, cutoff=0.75)
        if close:
            hints.append(f"{option}: did you mean {close[0]}?")
    return message + ("; " + "; ".join(hints) if hints else "")
