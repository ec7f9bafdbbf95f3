"""Sub-commands of `python -m bench`, one module each (found by bench.cli)."""
