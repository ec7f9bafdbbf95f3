"""Small TOML files the user writes (variants, claims), read without trusting them: a regular file of at most
MAX_TOML_BYTES, UTF-8, parsed by tomllib; anything else is a ConfigError of one line naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import ConfigError
from .paths import display

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as a package
    import tomli as tomllib  # type: ignore[no-redef]

#: a variants or claims file is a few tables; anything far larger is not one, and is not parsed
MAX_TOML_BYTES = 2**20


def read_toml(path: str | Path, what: str) -> dict[str, Any]:
    """The file as a dict; ConfigError naming it when it is missing, a directory, too large, not UTF-8, not TOML,
    or nested deeper than the parser recurses."""
    p = Path(path)
    try:
        if p.is_dir():
            raise ConfigError(f"{what} {display(p)} is a directory, not a TOML file")
        with open(p, "rb") as f:
            data = f.read(MAX_TOML_BYTES + 1)
        if len(data) > MAX_TOML_BYTES:
            raise ConfigError(f"{what} {display(p)} is larger than {MAX_TOML_BYTES} bytes; not read")
        return tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {display(p)} does not exist") from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} {display(p)} ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {display(p)} is not UTF-8 text (byte {e.start}); TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{what} {display(p)} is not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{what} {display(p)} nests arrays or tables too deeply") from None
