"""Sub-commands of `python -m bench`, one module each (found by bench.cli).

Every invocation imports every command module to build the parser, so the commands import the heavy parts
(torch, methods, metrics, reports, the runner) inside their functions: lazily, for start-up speed, not to
dodge an import cycle (there is none: the commands sit on top of everything).
"""

#: where `bench run` writes and the other commands read, unless --out says otherwise
DEFAULT_OUT = "bench-out"
