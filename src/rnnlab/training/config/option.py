"""One configuration option (section, key, default, type, help and its flag) and the error every
config problem raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A configuration problem: names the key, what was expected and what was given."""


@dataclass(frozen=True)
class Option:
    section: str
    key: str
    default: Any
    help: str
    kind: str  # int, float, bool, str, dict, case
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    low: float | None = None
    flag: str = ""

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"


def _o(section: str, key: str, default: Any, kind: str, help: str, flag: str, **kw: Any) -> Option:
    return Option(section, key, default, help, kind, flag=flag, **kw)
