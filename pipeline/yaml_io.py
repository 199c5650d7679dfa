"""YAML files the project reads itself (``params.yaml``): one strict loader, one line per problem.

PyYAML's ``safe_load`` keeps the last of two equal keys without a word (``dev.fraction`` written twice
gives another dev set than the one the reader sees first) and answers a syntax error, a tab, a byte that
is not UTF-8 or a top level that is no mapping with a long traceback or not at all. :func:`load_mapping`
refuses each of them with :class:`YamlError`, a :class:`~pipeline.errors.PipelineError` whose message is
one line naming the file, the line and the column, e.g.
``params.yaml:12:3: duplicate key 'fraction' (first at line 10)``.

Torch-free and schema-free (PyYAML only), so code that must run before torch loads can use it too.
"""
from __future__ import annotations

import codecs
from pathlib import Path

import yaml

from .errors import PipelineError

MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlError(PipelineError, ValueError):
    """A YAML file cannot be read as the project reads it. ``where`` is ``file:line:col`` (or the file
    alone), ``detail`` the problem; the message is ``where: detail``."""

    def __init__(self, where: str, detail: str):
        super().__init__(f"{where}: {detail}")
        self.where, self.detail = where, detail


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (at any depth)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == MERGE_TAG:  # keys merged in with << may be overridden; explicit ones may not
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key: SafeLoader reports it
                if seen is not key_node:
                    name = key_node.value if isinstance(key_node, yaml.ScalarNode) else key
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {name!r} (first at line {seen.start_mark.line + 1})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _at(where: str, line: int, column: int) -> str:
    return f"{where}:{line + 1}:{column + 1}"


def _line_col(text: str, index: int) -> tuple[int, int]:
    """0-based line and column of character ``index`` of ``text``."""
    line = text.count("\n", 0, index)
    return line, index - (text.rfind("\n", 0, index) + 1)


def decode(raw: bytes, where: str) -> str:
    """``raw`` as UTF-8 text (a leading byte-order mark is dropped); an undecodable byte is a
    :class:`YamlError` at its line and column (counted in characters)."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        start = raw.rfind(b"\n", 0, err.start) + 1
        line = raw.count(b"\n", 0, err.start)
        column = len(raw[start:err.start].decode("utf-8"))  # the bytes before the first bad one are valid
        raise YamlError(_at(where, line, column), f"not UTF-8 text: byte 0x{raw[err.start]:02x}") from None


def _problem(err: yaml.MarkedYAMLError) -> str:
    problem = err.problem or err.context or "invalid YAML"
    if "'\\t'" in problem:
        return "a tab character where YAML allows none (indent with spaces)"
    if problem == "but found another document":
        return "a second YAML document (---); the file holds one"
    context, mark = err.context, err.context_mark
    if err.problem and context and mark is not None and err.problem_mark is not None and \
            (mark.line, mark.column) != (err.problem_mark.line, err.problem_mark.column):
        problem += f" ({context} at line {mark.line + 1} column {mark.column + 1})"
    elif err.problem and context:
        problem += f" ({context})"
    return problem


def parse(text: str, where: str):
    """The one document of ``text`` (None when empty), loaded as :func:`yaml.safe_load` does but refusing
    duplicate keys, and its root node (for the position of an error about the whole document)."""
    loader = None
    try:
        loader = _StrictLoader(text)  # checks for characters YAML does not allow
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        at = _at(where, mark.line, mark.column) if mark is not None else where
        raise YamlError(at, _problem(err)) from None
    except yaml.reader.ReaderError as err:
        line, column = _line_col(text, err.position)
        raise YamlError(_at(where, line, column), f"character U+{err.character:04X} is not allowed in "
                                                   f"YAML ({err.reason})") from None
    except yaml.YAMLError as err:
        raise YamlError(where, " ".join(str(err).split())) from None
    finally:
        if loader is not None:
            loader.dispose()


_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}


def load_mapping(path: str | Path, where: str | None = None) -> dict:
    """The mapping a YAML file holds (an empty file: ``{}``), read strictly (see the module docstring).
    ``where`` names the file in messages (default: ``path`` as given)."""
    path = Path(path)
    where = where or str(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise YamlError(where, f"cannot be read: {err.strerror or err}") from None
    data, node = parse(decode(raw, where), where)
    if data is None:
        return {}
    if not isinstance(data, dict):
        kind = _KINDS.get(type(data), type(data).__name__)
        raise YamlError(_at(where, node.start_mark.line, node.start_mark.column),
                        f"the top level is {kind}; it must be a mapping of keys to values (key: value)")
    return data
