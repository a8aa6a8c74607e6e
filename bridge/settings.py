"""How a setting is declared once and becomes an option, an environment variable and a value.

A section of settings is a frozen dataclass subclassing :class:`Settings`; each field is
declared with :func:`setting` (default, help, metavar, checks). Everything else is derived from
that one declaration and the field's real annotation (``typing.get_type_hints``):

- the command-line flag ``--name-with-dashes`` and the variable ``BRIDGE_NAME``;
- the type a raw string is converted to (``bool``, ``int``, ``float``, ``str``), whether it may
  be unset (``X | None``), its choices (``Literal[...]``), and whether it repeats
  (``tuple[str, ...]``: the flag may be given several times; the variable holds one value per
  line);
- the ``--help`` line, with the variable and the default;
- every error message: ``--port (BRIDGE_PORT) must be 0-65535, got 70000``, spelled from the
  field's name, so a message can never name a flag that does not exist.

Checks that involve several fields of one section go in that section's ``rules`` method and
name fields through :meth:`Settings.option`, which refuses a name that is not a field.
Precedence: command line, then environment, then the default. ``docs/architecture.md``
("Settings") says how to add a setting or a section.

Import rule: standard library and ``bridge.errors`` only.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from bridge.errors import ConfigError, UsageError

ENV_PREFIX = "BRIDGE_"
_KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")

#: A check on one value: ``None`` when it holds, else the rule it breaks ("must be 0-65535").
Check = Callable[[Any], str | None]
SettingsT = TypeVar("SettingsT", bound="Settings")


def flag_name(name: str) -> str:
    """``first_message_timeout_s`` -> ``--first-message-timeout-s``."""
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    """``first_message_timeout_s`` -> ``BRIDGE_FIRST_MESSAGE_TIMEOUT_S``."""
    return ENV_PREFIX + name.upper()


# --- declaring a setting -------------------------------------------------------------------


def setting(
    default: Any,
    help: str,
    *,
    metavar: str | None = None,
    check: Check | tuple[Check, ...] = (),
    secret: bool = False,
) -> Any:
    """One setting: its default, its help line, and what a valid value is.

    ``secret`` keeps the value out of ``repr`` (and so out of any log of the config).
    Typed ``Any`` so that ``port: int = setting(8080, ...)`` type-checks as the field's type.
    """
    checks = check if isinstance(check, tuple) else (check,)
    return dataclasses.field(
        default=default,
        repr=not secret,
        metadata={"help": help, "metavar": metavar, "checks": checks},
    )


def rule(holds: Callable[[Any], bool], text: str) -> Check:
    """A check from a predicate and the rule's wording (``must be ...``)."""

    def check(value: Any) -> str | None:
        return None if holds(value) else text

    return check


def between(low: float, high: float) -> Check:
    return rule(lambda value: low <= value <= high, f"must be {low}-{high}")


def at_least(low: float) -> Check:
    return rule(lambda value: value >= low, f"must be at least {low}")


# Written as ranges so that NaN (``float("nan")`` parses fine) fails them too, as does inf.
positive_seconds = rule(lambda value: 0 < value < math.inf, "must be a positive number of seconds")
non_negative_seconds = rule(lambda value: 0 <= value < math.inf, "must be >= 0 seconds")
not_empty = rule(lambda value: value != "", "must not be empty")


def url(*schemes: str) -> Check:
    prefixes = tuple(f"{scheme}://" for scheme in schemes)
    return rule(
        lambda value: value.startswith(prefixes), f"must start with {' or '.join(prefixes)}"
    )


# --- KEY=VALUE pairs -----------------------------------------------------------------------


def parse_pairs(
    items: Iterable[str], source: str, *, separator: str = "=", unique: bool = False
) -> dict[str, str]:
    """``KEY=VALUE`` items (a repeated option) into a dict: every option taking pairs uses it.

    Keys and values are stripped; a key must be non-empty and free of white space. A later
    key replaces an earlier one unless ``unique``. An error shows the key, or the first word
    when there is no separator, never the value: it may be a credential
    (``--http-header 'Authorization: Bearer ...'``).
    """
    shape = "KEY=VALUE" if separator == "=" else f"'NAME{separator} VALUE'"
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition(separator)
        key = key.strip()
        if not sep or not key or any(ch.isspace() for ch in key):
            shown = key if sep else next(iter(item.split()), "")
            raise ConfigError(f"{source} needs {shape}, got {shown!r}")
        if unique and key in pairs:
            raise ConfigError(f"{source} {key!r} given twice")
        pairs[key] = value.strip()
    return pairs


def parse_pair_list(text: str, source: str) -> dict[str, str]:
    """``k=v,k=v`` (one setting holding several pairs) into a dict; empty text: empty dict."""
    return parse_pairs((item for item in text.split(",") if item.strip()), source)


def pair_list(value: str) -> str | None:
    """The check of a ``k=v,k=v`` setting."""
    try:
        parse_pair_list(value, "")
    except ConfigError:
        return "must be KEY=VALUE pairs separated by commas"
    return None


# --- what a declaration becomes --------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """Everything derived from one field: names, type, choices, help, checks."""

    name: str
    section: type[Settings]
    kind: type  # bool, int, float or str
    optional: bool
    #: ``tuple[str, ...]``: a repeatable flag; the variable holds one value per line.
    repeated: bool
    choices: tuple[Any, ...] | None
    default: Any
    help: str
    metavar: str | None
    checks: tuple[Check, ...]

    @property
    def flag(self) -> str:
        return flag_name(self.name)

    @property
    def env(self) -> str:
        return env_name(self.name)

    @property
    def negated_flag(self) -> str:
        """``--no-name``: a switch that may be unset (decided from other settings) has one."""
        return "--no-" + self.flag[2:]

    def describe(self, value: str = "") -> str:
        """How messages name this setting: ``--mode forward (BRIDGE_MODE)``."""
        return f"{self.flag}{' ' + value if value else ''} ({self.env})"

    def convert(self, raw: str | list[str], source: str) -> Any:
        """A raw string from ``source`` (a flag or a variable name) as the field's type."""
        if self.repeated:
            items = raw if isinstance(raw, list) else [line for line in raw.split("\n") if line]
            return tuple(str(item) for item in items)
        assert isinstance(raw, str)
        if self.kind is bool:
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ConfigError(f"{source}: expected true/false, got {raw!r}")
        try:
            value = self.kind(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: expected {self.kind.__name__}, got {raw!r}") from exc
        if self.choices is not None and value not in self.choices:
            shown = ", ".join(str(choice) for choice in self.choices)
            raise ConfigError(f"{source}: must be one of {shown}, got {raw!r}")
        return value

    def refusal(self, value: Any) -> str | None:
        """The rule ``value`` breaks (its type, its choices, a check), or ``None``.

        Values from the command line were converted already; this also guards a config
        built in Python (``ServerConfig(mode=...)``), where only mypy would see a wrong type.
        """
        if self.repeated:
            if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                return "must be a tuple of text values"
            for item in value:
                for check in self.checks:
                    broken = check(item)
                    if broken is not None:
                        return broken
            return None
        # bool is an int, but ``port=True`` is a mistake; an int is a fine float.
        fits = isinstance(value, self.kind) and (self.kind is bool or not isinstance(value, bool))
        if not fits and not (self.kind is float and type(value) is int):
            return f"must be {_KIND_WORDS[self.kind]}"
        if self.choices is not None and value not in self.choices:
            return f"must be one of {', '.join(str(choice) for choice in self.choices)}"
        for check in self.checks:
            broken = check(value)
            if broken is not None:
                return broken
        return None

    def to_text(self, value: Any) -> str | None:
        """The inverse of :meth:`convert` (``None`` for unset), for a child's environment."""
        if value is None:
            return None
        if self.repeated:
            return "\n".join(value) if value else None
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)


def _kind_of(name: str, hint: Any) -> tuple[type, bool, tuple[Any, ...] | None]:
    """(base type, may be None, choices) from an annotation such as ``Rate | None``."""
    if get_origin(hint) is tuple:
        if get_args(hint) != (str, ...):
            raise TypeError(f"setting {name}: a repeated setting is tuple[str, ...], got {hint}")
        return str, False, None
    optional = False
    if get_origin(hint) in (Union, types.UnionType):
        members = [arg for arg in get_args(hint) if arg is not type(None)]
        optional = len(members) < len(get_args(hint))
        if len(members) != 1:
            raise TypeError(f"setting {name}: one type (or None) only, got {hint}")
        hint = members[0]
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        kinds = {type(choice) for choice in choices}
        if len(kinds) != 1 or not kinds <= {int, str}:
            raise TypeError(f"setting {name}: Literal of ints or of strings only, got {hint}")
        return kinds.pop(), optional, choices
    if hint not in (bool, int, float, str):
        raise TypeError(f"setting {name}: bool, int, float, str or a Literal, got {hint}")
    return hint, optional, None


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Base of every section; a class combining sections by inheritance is all of them."""

    #: The section's heading in ``--help``.
    TITLE: ClassVar[str] = "settings"

    def __post_init__(self) -> None:
        for section in self.sections():
            for option in options(section):
                value = getattr(self, option.name)
                if value is None and option.optional:
                    continue
                broken = option.refusal(value)
                if broken is not None:
                    raise ConfigError(f"{option.describe()} {broken}, got {value!r}")
            section_rules = vars(section).get("rules")
            if section_rules is not None:
                section_rules(self)

    def rules(self) -> None:
        """Checks across this section's fields; raise ``ConfigError`` (see :meth:`option`)."""

    @classmethod
    def sections(cls) -> tuple[type[Settings], ...]:
        """The sections this class is made of, in declaration order (itself if it is one)."""
        return tuple(
            base
            for base in cls.__mro__
            if isinstance(base, type)
            and issubclass(base, Settings)
            and base is not Settings
            and _own_field_names(base)
        )

    @classmethod
    def option(cls, name: str, value: str = "") -> str:
        """``--name value (BRIDGE_NAME)`` for messages; a name that is no field is a bug."""
        return cls._find(name).describe(value)

    @classmethod
    def options_together(cls, *names: str) -> str:
        """``--a and --b (BRIDGE_A, BRIDGE_B)``: settings a rule binds together."""
        found = [cls._find(name) for name in names]
        flags = " and ".join(option.flag for option in found)
        return f"{flags} ({', '.join(option.env for option in found)})"

    @classmethod
    def _find(cls, name: str) -> Option:
        for option in all_options(cls):
            if option.name == name:
                return option
        raise UsageError(f"{cls.__name__} has no setting {name!r}")


def _own_field_names(section: type) -> list[str]:
    """Fields a class declares itself (dataclass fields whose annotation is in its body)."""
    own = vars(section).get("__annotations__", {})
    return [f.name for f in dataclasses.fields(section) if f.name in own]


# Derived once per class (mypy refuses classes as functools.cache keys).
_OPTIONS: dict[type[Settings], tuple[Option, ...]] = {}
_ALL_OPTIONS: dict[type[Settings], tuple[Option, ...]] = {}


def options(section: type[Settings]) -> tuple[Option, ...]:
    """The options one section declares, in declaration order."""
    if section not in _OPTIONS:
        _OPTIONS[section] = _declared(section)
    return _OPTIONS[section]


def _declared(section: type[Settings]) -> tuple[Option, ...]:
    hints = get_type_hints(section)
    fields = {f.name: f for f in dataclasses.fields(section)}
    found = []
    for name in _own_field_names(section):
        f = fields[name]
        if "help" not in f.metadata:
            raise TypeError(f"{section.__name__}.{name}: declare it with setting(...)")
        kind, optional, choices = _kind_of(name, hints[name])
        found.append(
            Option(
                name=name,
                section=section,
                kind=kind,
                optional=optional,
                repeated=get_origin(hints[name]) is tuple,
                choices=choices,
                default=f.default,
                help=f.metadata["help"],
                metavar=f.metadata["metavar"],
                checks=f.metadata["checks"],
            )
        )
    return tuple(found)


def all_options(cls: type[Settings]) -> tuple[Option, ...]:
    """Every option of ``cls``, section by section; a name declared twice is refused."""
    if cls not in _ALL_OPTIONS:
        _ALL_OPTIONS[cls] = _combined(cls)
    return _ALL_OPTIONS[cls]


def _combined(cls: type[Settings]) -> tuple[Option, ...]:
    found = [option for section in cls.sections() for option in options(section)]
    seen: dict[str, type[Settings]] = {}
    for option in found:
        if option.name in seen:
            raise TypeError(
                f"setting {option.name!r} is declared by both {seen[option.name].__name__} "
                f"and {option.section.__name__}: flags and variables must be unique"
            )
        seen[option.name] = option.section
    return tuple(found)


# --- where values come from ------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, cls: type[Settings]) -> None:
    """One option per setting, grouped by section; defaults stay ``None`` so that the
    environment and the declared default can apply (see :func:`load`)."""
    for section in cls.sections():
        group = parser.add_argument_group(section.TITLE)
        for option in options(section):
            facts = [f"env {option.env}", f"default {option.default}"]
            if option.repeated:
                facts = [f"env {option.env}, one value per line", "default none"]
            metavar = option.metavar
            if option.choices is not None:
                shown = ",".join(str(choice) for choice in option.choices)
                if metavar is None:
                    metavar = "{" + shown + "}"
                else:
                    facts.append(f"one of {shown}")
            help_text = f"{option.help} [{'; '.join(facts)}]"
            if option.repeated:
                group.add_argument(
                    option.flag,
                    dest=option.name,
                    action="append",
                    default=None,
                    metavar=metavar,
                    help=f"{option.help} (repeatable) [{'; '.join(facts)}]",
                )
                continue
            if option.kind is bool:
                group.add_argument(
                    option.flag,
                    dest=option.name,
                    action="store_const",
                    const="true",
                    default=None,
                    help=help_text,
                )
                if option.optional:
                    # Unset means "decided from other settings" (--phone-page): both ways.
                    group.add_argument(
                        option.negated_flag,
                        dest=option.name,
                        action="store_const",
                        const="false",
                        help=f"the opposite of {option.flag} [{option.env}=false]",
                    )
                continue
            group.add_argument(
                option.flag, dest=option.name, default=None, metavar=metavar, help=help_text
            )


def load(
    cls: type[SettingsT],
    args: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
) -> SettingsT:
    """Build ``cls``: command line over ``BRIDGE_*`` environment over defaults, validated."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for option in all_options(cls):
        raw = getattr(args, option.name, None) if args is not None else None
        if raw is not None:
            values[option.name] = option.convert(
                raw if isinstance(raw, list) else str(raw), option.flag
            )
        elif option.env in env:
            values[option.name] = option.convert(env[option.env], option.env)
    return cls(**values)


def to_environ(settings: Settings) -> dict[str, str | None]:
    """Every setting as its ``BRIDGE_*`` variable (``None``: unset), which :func:`load` reads
    back to an equal object."""
    return {
        option.env: option.to_text(getattr(settings, option.name))
        for option in all_options(type(settings))
    }
