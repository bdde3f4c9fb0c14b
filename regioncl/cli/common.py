"""What every command shares: a parser whose errors are one line for a person, not a usage dump."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad option raised as :class:`UserError` (the ``regioncl`` command prints
    it as ``regioncl: error: ...`` and exits with status 2), and every ``--long-option`` spelt
    with dashes or underscores alike, as the configuration's fields are (``--image_size``)."""

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:  # type: ignore[override]
        spellings = [n for name in names for n in ((name, "--" + name[2:].replace("-", "_"), "--" + name[2:].replace("_", "-"))
                                                   if name.startswith("--") else (name,))]
        return super().add_argument(*dict.fromkeys(spellings), **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


def parser(doc: str | None, prog: str | None = None) -> ArgumentParser:
    return ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
