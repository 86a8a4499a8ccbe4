"""Command-line flags generated from a command's pydantic config.

One flag per scalar field: `max_tokens` becomes `--max-tokens`, with the field's description
and default as its help, a Literal's values as its choices, a bool as a switch, and a required
field required. A flag not given is None, and the config gets only the fields given, as typed:
pydantic converts and checks them, so a flag means exactly what its field means and a bad value
is the config's one-line error. A command spells a field its own way (`--n 1,4,16` for `ns`)
with a `Flag`.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from tts.errors import invalid_options

Config = TypeVar("Config", bound=BaseModel)
SCALARS = (str, int, float, bool, Path)


class Flag:
    """How a command spells one field: its option strings (default: the generated
    `--field-name`) and `add_argument` keywords over the generated ones."""

    def __init__(self, *names: str, **options: Any) -> None:
        self.names, self.options = names, options


# field -> its spelling; None: the field is no flag of this command.
Flags = Mapping[str, Flag | None]


class KeyValues(argparse.Action):
    """`-o KEY=VALUE`, repeatable, gathered into one mapping. A value is read as YAML, so
    `-o beam_width=4` is a number and `-o 'stop=["Q:"]'` a list."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        key, sep, text = str(values).partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentError(self, f"expected KEY=VALUE, got {values!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            raise argparse.ArgumentError(self, f"{values!r}: the value is not YAML") from None
        given = getattr(namespace, self.dest) or {}
        setattr(namespace, self.dest, {**given, key.strip(): value})


def search_flags() -> dict[str, Flag]:
    """How the commands that load a backend and run a strategy spell those fields: the names
    the registries know in the metavar (the config refuses others, in its own words), and the
    strategy's options as `-o KEY=VALUE`."""
    # Heavy: only a command whose config imports them anyway calls this.
    from tts.engine import BACKENDS
    from tts.search import STRATEGIES

    return {
        "backend": Flag(metavar="|".join(BACKENDS)),
        "strategy": Flag(metavar="|".join(STRATEGIES)),
        "options": Flag(
            "-o",
            "--option",
            action=KeyValues,
            metavar="KEY=VALUE",
            help="a strategy option, e.g. -o beam_width=4 -o aggregation=min (repeatable)",
        ),
    }


def engine_flags() -> dict[str, Flag]:
    """The backend's own options, for the commands that load one from the command line."""
    return {
        "engine_options": Flag(
            "--engine-option",
            action=KeyValues,
            metavar="KEY=VALUE",
            help="a backend option passed to tts.engine.load, e.g. --engine-option "
            "speculative_tokens=4 (repeatable)",
        )
    }


def add_config_flags(
    parser: argparse.ArgumentParser,
    config: type[BaseModel],
    flags: Flags | None = None,
    overriding: str | None = None,
) -> None:
    """Add a flag for each scalar field of `config` and each field `flags` spells. Other fields
    (nested settings, lists, mappings) stay the file's. `overriding` names the file the flags
    override (a recipe, a server config): then no flag is required, a switch turns a bool off
    as well as on, and a default is that file's before the field's."""
    flags = flags or {}
    for name, field in config.model_fields.items():
        if name in flags and flags[name] is None:
            continue
        spelled = flags.get(name)
        if spelled is None and not is_scalar(field):
            continue
        names = ("--" + name.replace("_", "-"),)
        options = generated_options(field, overriding)
        if spelled is not None:
            names = spelled.names or names
            options |= spelled.options
        parser.add_argument(*names, dest=name, **options)


def generated_options(field: FieldInfo, overriding: str | None) -> dict[str, Any]:
    """`add_argument` keywords for a field, as the module docstring says."""
    options: dict[str, Any] = {"default": None, "help": help_text(field, overriding)}
    kinds = value_types(field.annotation)
    if kinds == [bool]:
        switch = overriding is None and field.default is False
        options["action"] = "store_true" if switch else argparse.BooleanOptionalAction
        return options
    options["required"] = overriding is None and field.is_required()
    if len(kinds) == 1 and get_origin(kinds[0]) is Literal:
        options["choices"] = get_args(kinds[0])
    return options


def help_text(field: FieldInfo, overriding: str | None) -> str:
    """The field's description and its default (argparse formats help with %)."""
    text = (field.description or "").replace("%", "%%")
    default = None if field.is_required() else field.get_default(call_default_factory=True)
    if default is None or default is False or default in ({}, [], ()):
        shown = None
    elif isinstance(default, list | tuple):
        shown = ",".join(map(str, default))
    elif isinstance(default, str) and (not default.isprintable() or default != default.strip()):
        shown = repr(default)
    else:
        shown = str(default)
    if overriding is not None:
        shown = f"{overriding}'s" + (f", else {shown}" if shown is not None else "")
    return text if shown is None else f"{text} (default: {shown})"


def value_types(annotation: Any) -> list[Any]:
    """The types a field's value may have, None left out (`int | None` -> [int])."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def is_scalar(field: FieldInfo) -> bool:
    """Whether one command-line word can give the field: a number, a string, a path, a bool,
    or one of a Literal's values."""
    return all(
        get_origin(kind) is Literal or (isinstance(kind, type) and issubclass(kind, SCALARS))
        for kind in value_types(field.annotation)
    )


def config_values(config: type[BaseModel], args: argparse.Namespace) -> dict[str, Any]:
    """The fields of `config` given on the command line (a flag not given is None)."""
    return {
        name: value
        for name in config.model_fields
        if (value := getattr(args, name, None)) is not None
    }


def make_config(config: type[Config], args: argparse.Namespace, what: str) -> Config:
    """`config` from the flags given; a value it refuses is a one-line error naming `what`."""
    try:
        return config(**config_values(config, args))
    except ValidationError as error:
        raise invalid_options(what, error) from None
