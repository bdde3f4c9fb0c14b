"""Errors in what a user asked for: an option, a size, a file, a dataset, a checkpoint.

Raised by the checks that run before any compute; the ``regioncl`` command reports them as one
line, ``regioncl: error: ...``, with exit status 2 and no traceback (``--debug`` or
``REGIONCL_DEBUG=1`` shows it). All are :class:`ValueError` (and the others a
:class:`FileNotFoundError` or an :class:`ImportError`), so code that catches those keeps working.
"""


class UserError(ValueError):
    """A setting or an input that cannot work; the message says which and what to do."""


class UserFileNotFoundError(UserError, FileNotFoundError):
    """A file, folder, recipe, dataset or checkpoint that is not there."""


class MissingExtraError(UserError, ImportError):
    """An optional package a command needs is not installed; the message says what to install.
    An :class:`ImportError` too, so code that treats the package as optional keeps working."""


#: stopped by a signal, a checkpoint saved at the step reached (EX_TEMPFAIL: try again).
EXIT_STOPPED = 75
#: stopped at a non-finite loss; no checkpoint was written from those weights (EX_DATAERR).
EXIT_NONFINITE = 65
#: a checkpoint could not be written (EX_IOERR); the earlier ones are intact.
EXIT_CHECKPOINT = 74
#: too many training images could not be read; a checkpoint was saved at the step reached (EX_NOINPUT).
EXIT_BAD_DATA = 66


class RunStopped(Exception):
    """The run stopped on purpose: ``message`` for a person, ``exit_code`` for the shell."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
