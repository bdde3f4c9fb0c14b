"""``python -m regioncl COMMAND ...`` (and ``accelerate launch -m regioncl COMMAND ...``)."""

from .cli import main

if __name__ == "__main__":
    main()
