"""docs/configuration.md, written from the config dataclasses' docstrings and defaults, so
that the page and the code cannot disagree (a test compares them).

    python -m keras_s2s.config_reference > docs/configuration.md
"""

from __future__ import annotations

import dataclasses
import re
import typing

from keras_s2s.config import Config

_ENTRY = re.compile(r"^ {8}(\w+(?:, \w+)*): (\w+)\. (.*)$")
_CONTINUATION = re.compile(r"^ {12}(.*)$")


def documented_fields(cls) -> dict[str, str]:
    """`{field: description}` from the `Args:` section of a dataclass's docstring."""
    described: dict[str, str] = {}
    names: list[str] = []
    for line in (cls.__doc__ or "").split("Args:", 1)[-1].splitlines():
        if entry := _ENTRY.match(line):
            names = entry.group(1).split(", ")
            for name in names:
                described[name] = entry.group(3)
        elif (more := _CONTINUATION.match(line)) and names:
            for name in names:
                described[name] += " " + more.group(1)
    return described


def _default(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    return str(value)


def reference() -> str:
    """The page: one table per section, every field with its default and meaning."""
    lines = [
        "# Configuration",
        "",
        "A run is one config: a preset (`keras_s2s/configs/NAME.yaml`) or your own YAML file given",
        "to `--config`, with single fields changed by `--set section.key=value`. Every value is",
        "checked before anything runs; a bad one stops with an error naming its key. The resolved",
        "config is written to `RUN_DIR/config.json`. This page is generated from",
        "`keras_s2s/config.py` (`python -m keras_s2s.config_reference > docs/configuration.md`).",
    ]
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        cls = hints[section.name]
        if not dataclasses.is_dataclass(cls):  # `name`: the run's label
            continue
        described = documented_fields(cls)
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        lines += ["", f"## `{section.name}`", "", summary, "", "| key | default | meaning |", "| --- | --- | --- |"]
        for field in dataclasses.fields(cls):
            if field.name not in described:
                raise ValueError(f"{cls.__name__}.{field.name}: not described in the docstring's Args")
            meaning = described[field.name].replace("|", "\\|")
            lines.append(f"| `{section.name}.{field.name}` | `{_default(field.default)}` | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
