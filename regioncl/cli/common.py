"""What every command shares: a parser whose errors are one line for a person, not a usage dump."""

from __future__ import annotations

import argparse

from ..errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad option raised as :class:`UserError` (the ``regioncl`` command prints
    it as ``regioncl: error: ...`` and exits with status 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


def parser(doc: str | None, prog: str | None = None) -> ArgumentParser:
    return ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
