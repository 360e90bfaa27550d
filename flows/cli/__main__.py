"""``python -m restoredrill.flows.cli``: the ``restoredrill`` command."""

from . import main

main()
