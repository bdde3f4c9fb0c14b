"""Errors in what a user asked for: an option, a size, a file, a dataset, a checkpoint.

Raised by the checks that run before any compute; the ``regioncl`` command reports them as one
line, ``regioncl: error: ...``, with exit status 2 and no traceback (``--debug`` or
``REGIONCL_DEBUG=1`` shows it). Both are :class:`ValueError` (and the second a
:class:`FileNotFoundError`), so code that catches those keeps working.
"""


class UserError(ValueError):
    """A setting or an input that cannot work; the message says which and what to do."""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A file, folder, recipe, dataset or checkpoint that is not there."""
