"""`python -m bench COMMAND ...`: every module in bench/commands registers one sub-command."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .core.errors import UsageError
from .core.registry import Registry, UnknownNameError

EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: Registry[Command] = Registry("command")


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Decorator: register `run(args) -> exit code` as the sub-command `name`."""

    def deco(run: Callable[[argparse.Namespace], int]):
        COMMANDS.add(name, Command(name, help, add_arguments, run))
        return run

    return deco


def user_errors() -> tuple[type[BaseException], ...]:
    # imported when an error is being handled, not at start-up (metrics.weights pulls in torch)
    from .core.checkpoint import CheckpointError
    from .core.config import ConfigError
    from .core.data import DatasetError
    from .core.paths import UnsafePathError
    from .core.store import StoreError

    errors: list[type[BaseException]] = [UsageError, UnknownNameError, ConfigError, DatasetError, StoreError,
                                         UnsafePathError, CheckpointError]
    try:
        from metrics.weights import WeightsError  # the metrics' weight acquisition, when present

        errors.append(WeightsError)
    except ImportError:
        pass
    return tuple(errors)


def build_parser() -> argparse.ArgumentParser:
    from . import commands

    for mod in pkgutil.iter_modules(commands.__path__):
        importlib.import_module(f"{commands.__name__}.{mod.name}")
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmark suite for autoencoder-GAN hybrids.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in sorted(COMMANDS):
        cmd = COMMANDS.get(name)
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from methods.plugins import PluginError, load_plugins

    try:
        load_plugins()  # $AEGAN_BENCH_PLUGINS and the "aegan_bench.methods" entry points, for every command
    except PluginError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
