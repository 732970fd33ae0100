"""The ``zoo`` program's entry point: the signal handlers first, then the command line.

Apart from ``zoo.cli.commands`` so that a Ctrl-C while click, pluggy and the plugins
import ends with ``zoo: interrupted`` and exit 130, not a Python traceback.
"""

from __future__ import annotations


def main() -> None:
    from zoo import interrupts

    interrupts.as_program()
    from zoo.cli.output import own_standard_streams

    own_standard_streams()  # before any plugin code: descriptor 1 is zoo's alone
    from zoo.cli.commands import cli

    cli(prog_name="zoo")
