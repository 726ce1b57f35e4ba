"""Typed settings: one dataclass definition gives the defaults, the YAML keys, the command-line options and the checks.

A config field declared with :func:`option` carries its help text (what it is and its unit) and how the
command line spells it. :class:`Settings` turns a config dataclass into everything a command needs:

* argparse options, grouped by section, each help line ending with its default (:meth:`Settings.add_arguments`,
  which also adds ``--config FILE`` and ``--print-config``);
* a reader of YAML files, sectioned or flat, whose errors name the file and the key (:meth:`Settings.read_file`);
* the resolved config (:meth:`Settings.from_args`), lowest first: the dataclass defaults, the command line's own
  defaults (``cli_default``), environment variables named by the fields (``env``), the ``--config`` file, the
  options given on the command line;
* the config as YAML that ``--config`` reads back to the same config (:meth:`Settings.to_yaml`).

A config is one of three shapes, all read and written the same way:

* flat — a dataclass of plain fields (``ServingConfig``): YAML ``{field: value}``;
* nested — fields that hold dataclasses are sections (``PrepareConfig.preprocessing``): YAML
  ``{field: value, …, preprocessing: {field: value}}``;
* composed — a dataclass that is the union of section dataclasses (``TrainConfig`` = data + model + task +
  trainer + tracking), given as ``Settings(TrainConfig, {"data": DataConfig, …})``: YAML ``{data: {…}, …}``.

A YAML file may also give any field flat at the top level (field names are unique across sections). Values
are checked against the field types, and text from the command line or the environment is converted; a
mapping field given in several places is merged key by key, the later place winning.

Only the standard library and PyYAML, so building a command's parser stays instant.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime as dt
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration key or value that cannot be used; the message names where it came from."""


class FieldValues(dict):
    """The values of several fields set by one command-line option: what a ``parse`` function returns when its
    flag stands for more than its own field (``--cutoffs 2024-06-01,2024-07-01`` sets the strategy and the dates)."""


def option(default: Any = MISSING, help: str = "", *, factory: Callable[[], Any] | None = None,
           flag: str | None = None, cli_default: Any = MISSING, parse: Callable[[Any], Any] | None = None,
           choices: Iterable[Any] | None = None, metavar: str | None = None, repeat: bool = False,
           env: str | None = None, cli: bool = True) -> Any:
    """A dataclass field with its help text (what it is and its unit) and how the command line spells it.

    ``flag``: the option's name (default ``--field-name``); a name without leading dashes makes a positional
    argument shown under that name. ``cli_default``: the value the command line starts from where it differs
    from the library's default. ``parse``: turns the command-line text (the list of texts, with ``repeat``) into
    the value, or into :class:`FieldValues` for several fields. ``choices``: the allowed values.
    ``repeat``: the option may be given several times. ``env``: an environment variable that sets the field
    (above the defaults, below ``--config``). ``cli=False``: settable in YAML only.
    """
    metadata: dict[str, Any] = {"help": help}
    for key, value in (("flag", flag), ("parse", parse), ("metavar", metavar), ("env", env)):
        if value is not None:
            metadata[key] = value
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if cli_default is not MISSING:
        metadata["cli_default"] = cli_default
    if repeat:
        metadata["repeat"] = True
    if not cli:
        metadata["cli"] = False
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    if default is MISSING:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


def check_choice(owner: object, name: str, value: object, choices: Iterable[object]) -> None:
    """Raise :class:`ConfigError` ``"Owner.name = value; expected one of [...]"`` when ``value`` is not a choice.

    ``owner`` is a section's name (``"trainer"``) or the config object itself, which its class then names.
    """
    allowed = list(choices)
    if value not in allowed:
        label = owner if isinstance(owner, str) else type(owner).__name__
        raise ConfigError(f"{label}.{name} = {value!r}; expected one of {allowed}")


def key_values(flag: str, example: str, form: str = "KEY=VALUE") -> Callable[[list[str]], dict[str, Any]]:
    """A ``parse`` function for a repeated ``FLAG KEY=VALUE`` option; each value is read as YAML (``2`` -> int)."""

    def parse(items: list[str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for item in items:
            if "=" not in item:
                raise ConfigError(f"{flag} {item!r}: expected {form}, e.g. {example}")
            key, text = item.split("=", 1)
            values[key.strip()] = yaml.safe_load(text)
        return values

    return parse


# ------------------------------------------------------------------------------------------ values and types

_NO = object()  # "this type does not take this value"
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _alternatives(hint: Any) -> tuple[Any, ...]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def _convert(kind: Any, value: Any) -> Any:
    """``value`` as ``kind`` (text converted), or ``_NO``."""
    origin = typing.get_origin(kind) or kind
    if kind is Any:
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return _NO
    elif kind is str:
        if isinstance(value, dt.date):  # YAML reads an unquoted 2024-06-01 as a date
            return value.isoformat()
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    elif origin is list:
        if isinstance(value, str):  # the command line's comma-separated form
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, (list, tuple)):
            item = (typing.get_args(kind) or (Any,))[0]
            converted = [_convert(item, v) for v in value]
            if all(c is not _NO for c in converted):
                return converted
    elif origin is dict:
        if isinstance(value, Mapping):
            return dict(value)
    return _NO


def coerce(hint: Any, name: str, value: Any, where: str) -> Any:
    """``value`` checked against type ``hint`` (and converted from text); errors say ``where`` it came from."""
    options = _alternatives(hint)
    if value is None:
        if type(None) in options or hint is Any:
            return None
        raise ConfigError(f"{where}: {name} may not be empty; expected {_type_name(hint)}")
    kinds = [o for o in options if o is not type(None)]
    for kind in kinds:
        converted = _convert(kind, value)
        if converted is not _NO:
            return converted
    raise ConfigError(f"{where}: {name} = {value!r}; expected {' or '.join(_type_name(k) for k in kinds)}")


def _plain(value: Any) -> Any:
    """``value`` as YAML's plain types (lists, dicts, text, numbers), so that the dump loads back."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return copy.deepcopy(value)


def _merge(values: dict[str, Any], later: Mapping[str, Any]) -> None:
    """``later`` on top of ``values``; mappings are merged key by key (``--set`` adds to a file's overrides)."""
    for name, value in later.items():
        if isinstance(values.get(name), dict) and isinstance(value, dict):
            values[name] = {**values[name], **value}
        else:
            values[name] = value


def _first_line(cls: type) -> str:
    return (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".")


# ------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Section:
    """A group of fields: one YAML mapping under ``name`` (``None``: the top level) and one group of options."""

    name: str | None
    cls: type
    attribute: str | None  # the config's field holding this section's object; None = the config's own fields
    fields: tuple[dataclasses.Field, ...]
    hints: Mapping[str, Any]

    @property
    def label(self) -> str:
        return self.name or self.cls.__name__

    def key(self, name: str) -> str:
        return f"{self.name}.{name}" if self.name else name


def _section(name: str | None, cls: type, attribute: str | None, only: Iterable[dataclasses.Field] | None = None) -> Section:
    return Section(name, cls, attribute, tuple(dataclasses.fields(cls) if only is None else only),
                   typing.get_type_hints(cls))


def _is_dataclass_type(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


class Settings:
    """The settings of one command: its config dataclass, the sections of its fields and how they are read.

    ``Settings(Config)`` makes the fields that hold dataclasses sections named after them;
    ``Settings(Config, {"data": DataConfig, …})`` groups the fields of a config composed of section classes.
    ``exclude`` leaves fields off the command line (a file may still set them).
    """

    def __init__(self, config: type, sections: Mapping[str, type] | None = None, *, exclude: Iterable[str] = ()):
        self.config = config
        self.exclude = frozenset(exclude)
        if sections is None:
            hints = typing.get_type_hints(config)
            nested = [f for f in dataclasses.fields(config) if _is_dataclass_type(hints[f.name])]
            own = [f for f in dataclasses.fields(config) if f not in nested]
            self.sections = (_section(None, config, None, own),
                             *(_section(f.name, hints[f.name], f.name) for f in nested))
        else:
            self.sections = tuple(_section(name, cls, None) for name, cls in sections.items())
        self.fields: dict[str, tuple[Section, dataclasses.Field]] = {}
        for section in self.sections:
            for f in section.fields:
                if f.name in self.fields:
                    raise TypeError(f"{config.__name__}: field {f.name!r} is in two sections")
                self.fields[f.name] = (section, f)
        if sections is not None:
            left_out = {f.name for f in dataclasses.fields(config)} - set(self.fields)
            if left_out:
                raise TypeError(f"{config.__name__}: fields {sorted(left_out)} are in no section")

    # -------------------------------------------------------------------------------------- reading values

    def flag(self, name: str) -> str:
        """How the command line spells field ``name`` (``--max-epochs``; a positional's shown name)."""
        return self.fields[name][1].metadata.get("flag") or "--" + name.replace("_", "-")

    def coerce(self, name: str, value: Any, where: str) -> Any:
        """``value`` checked against field ``name``'s type and choices; errors say ``where`` it came from."""
        section, f = self.fields[name]
        value = coerce(section.hints[name], name, value, where)
        choices = f.metadata.get("choices")
        if choices is not None and value is not None:
            try:
                check_choice(section.label, name, value, choices)
            except ConfigError as error:
                raise ConfigError(f"{where}: {error}") from None
        return value

    def cli_defaults(self) -> dict[str, Any]:
        """The values the command line starts from where they differ from the dataclass defaults."""
        return {name: copy.deepcopy(f.metadata["cli_default"]) for name, (_, f) in self.fields.items()
                if "cli_default" in f.metadata}

    def env_values(self, environ: Mapping[str, str]) -> dict[str, Any]:
        """The fields set by their environment variables (empty ones count as unset)."""
        values = {}
        for name, (_, f) in self.fields.items():
            variable = f.metadata.get("env")
            if variable and environ.get(variable, "") != "":
                values[name] = self.coerce(name, environ[variable], variable)
        return values

    def _expected(self) -> str:
        named = [s.name for s in self.sections if s.name]
        fields = sorted(self.fields)
        return f"sections {named} or fields {fields}" if named else f"fields {fields}"

    def read_mapping(self, data: Any, where: str) -> dict[str, Any]:
        """Sectioned or flat YAML content -> ``{field: value}``, each key and value checked."""
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {self._expected()}")
        named = {s.name: s for s in self.sections if s.name}
        values: dict[str, Any] = {}
        for key, value in data.items():
            section = named.get(key)
            if section is not None and isinstance(value, Mapping):
                allowed = [f.name for f in section.fields]
                for name, item in value.items():
                    if name not in allowed:
                        raise ConfigError(f"{where}: unknown key {key}.{name}; section {key!r} has {sorted(allowed)}")
                    values[name] = self.coerce(name, item, f"{where}, {key}.{name}")
            elif section is not None and value is None and key not in self.fields:
                continue  # an empty section
            elif key in self.fields:
                values[key] = self.coerce(key, value, f"{where}, {key}")
            else:
                raise ConfigError(f"{where}: unknown key {key!r}; expected {self._expected()}")
        return values

    def read_file(self, path: str | Path) -> dict[str, Any]:
        """The checked values of a YAML config file (sectioned or flat)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:  # its message spans lines; the CLI prints one
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from error
        return self.read_mapping(data, str(path))

    def values_from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        """The values of the options given on the command line (absent ones are ``None`` in ``args``)."""
        values: dict[str, Any] = {}
        for name, (_, f) in self.fields.items():
            given = getattr(args, name, None)
            if given is None or given == [] and not self.flag(name).startswith("-"):
                continue
            where = self.flag(name)
            parse = f.metadata.get("parse")
            parsed = parse(given) if parse else given
            if isinstance(parsed, FieldValues):
                values.update({key: self.coerce(key, value, where) for key, value in parsed.items()})
            else:
                values[name] = self.coerce(name, parsed, where)
        return values

    # -------------------------------------------------------------------------------------- the config

    def build(self, values: Mapping[str, Any]) -> Any:
        """The config from ``{field: value}``; fields left out keep their defaults, required ones must be there."""
        for name, (section, f) in self.fields.items():
            if name not in values and f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{self.flag(name)} is required (or {section.key(name)} in --config)")
        own: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            section, _ = self.fields[name]
            if section.attribute:
                nested.setdefault(section.attribute, {})[name] = value
            else:
                own[name] = value
        for section in self.sections:
            if section.attribute in nested:
                own[section.attribute] = section.cls(**nested[section.attribute])
        return self.config(**own)

    def from_args(self, args: argparse.Namespace, *, environ: Mapping[str, str] | None = None, **fixed: Any) -> Any:
        """The command's config: defaults < the CLI's defaults < environment < ``--config`` < options < ``fixed``."""
        values = self.cli_defaults()
        _merge(values, self.env_values(os.environ if environ is None else environ))
        if getattr(args, "config", None):
            _merge(values, self.read_file(args.config))
        _merge(values, self.values_from_args(args))
        values.update(fixed)
        return self.build(values)

    def dump(self, config: Any) -> dict[str, Any]:
        """``config`` as the mapping :meth:`read_mapping` reads back: named sections nested, the rest flat."""
        out: dict[str, Any] = {}
        for section in self.sections:
            holder = getattr(config, section.attribute) if section.attribute else config
            values = {f.name: _plain(getattr(holder, f.name)) for f in section.fields}
            if section.name:
                out[section.name] = values
            else:
                out.update(values)
        return out

    def to_yaml(self, config: Any) -> str:
        """``config`` as YAML for ``--config`` (what ``--print-config`` prints)."""
        return yaml.safe_dump(self.dump(config), sort_keys=False, allow_unicode=True)

    # -------------------------------------------------------------------------------------- command line

    def default_text(self, name: str) -> str:
        """The default shown in ``--help``: the CLI's own default, else the field's; with its variable."""
        f = self.fields[name][1]
        if "cli_default" in f.metadata:
            default = f.metadata["cli_default"]
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = f.default
        if default is MISSING:
            text = "required unless in --config"
        elif default is None:
            text = "none"
        elif isinstance(default, bool):
            text = "on" if default else "off"
        elif isinstance(default, dict):
            text = ", ".join(f"{k}={v}" for k, v in default.items()) or "none"
        elif isinstance(default, (list, tuple)):
            text = ",".join(str(v) for v in default) or "none"
        else:
            text = str(default)
        variable = f.metadata.get("env")
        return f"${variable}, else {text}" if variable else text

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """``--config``, ``--print-config`` and one option per field, grouped by section, with help and default."""
        named = [s.name for s in self.sections if s.name]
        if not named:
            shape = "field: value"
        elif self.sections[0].name is None:
            shape = f"field: value, and {' / '.join(named)}: {{field: value}}"
        else:
            shape = f"{' / '.join(named)} sections, or flat fields"
        parser.add_argument("--config", metavar="FILE", help=f"YAML file of these settings ({shape}); options "
                            "given on the command line override it (see --print-config)")
        parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML (what "
                            "--config reads back) and exit without running")
        for section in self.sections:
            title = f"{section.name} ({_first_line(section.cls)})" if section.name else _first_line(section.cls)
            group = parser.add_argument_group(title)
            for f in section.fields:
                if f.name not in self.exclude and f.metadata.get("cli", True):
                    self._add_argument(group, section, f)

    def _add_argument(self, group: argparse._ArgumentGroup, section: Section, f: dataclasses.Field) -> None:
        flag = self.flag(f.name)
        hint = section.hints[f.name]
        text = f"{f.metadata.get('help', '')} (default: {self.default_text(f.name)})".replace("%", "%%")
        choices = f.metadata.get("choices")
        metavar = f.metadata.get("metavar") or ("{" + ",".join(map(str, choices)) + "}" if choices
                                                else flag.lstrip("-").replace("-", "_").upper())
        if not flag.startswith("-"):
            many = any((typing.get_origin(k) or k) is list for k in _alternatives(hint))
            group.add_argument(f.name, nargs="*" if many else "?", default=None, metavar=flag, help=text)
        elif bool in _alternatives(hint):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif f.metadata.get("repeat"):
            group.add_argument(flag, dest=f.name, action="append", default=None, metavar=metavar, help=text)
        else:  # default None = "not given": the file and the defaults below it stand
            group.add_argument(flag, dest=f.name, default=None, metavar=metavar, help=text)


__all__ = ["ConfigError", "FieldValues", "Section", "Settings", "check_choice", "coerce", "key_values", "option"]
