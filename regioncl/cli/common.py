"""What every command shares: a parser whose errors are one line for a person, not a usage dump.

Every command's module imports only what its parser needs at the top; torch, timm, Accelerate and
``datasets`` are imported once the arguments are parsed, so ``--help`` and a mistyped option
answer at once.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UserError
from ..spelling import did_you_mean


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description as written (its examples keep their lines), and every option's default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        default = action.default
        if (
            not (default is None or default is False or default == argparse.SUPPRESS)
            and "default" not in help
            and action.option_strings
        ):
            help += " (default: %(default)s)"
        return help


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad option raised as :class:`UserError` (the ``regioncl`` command prints
    it as ``regioncl: error: ...`` and exits with status 2) with a "did you mean", and every
    ``--long-option`` spelt with dashes or underscores alike, as the configuration's fields are
    (``--image_size``)."""

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:  # type: ignore[override]
        default = kwargs.get("default")
        if "help" not in kwargs and not (default is None or default is False or default == argparse.SUPPRESS):
            kwargs["help"] = "default: %(default)s"
        spellings = [
            n
            for name in names
            for n in (
                (name, "--" + name[2:].replace("-", "_"), "--" + name[2:].replace("_", "-"))
                if name.startswith("--")
                else (name,)
            )
        ]
        return super().add_argument(*dict.fromkeys(spellings), **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        options = [o for action in self._actions for o in action.option_strings]
        raise UserError(f"{did_you_mean(message, options)} (see {self.prog} --help)")


def parser(doc: str | None, prog: str | None = None) -> ArgumentParser:
    return ArgumentParser(prog=prog, description=doc, formatter_class=HelpFormatter)
