"""The config schema (workflows/schemas/config.schema.yaml) as the check of the files the DAG writes from one of its
entries: a model spec (pixart.generate) and a scorer's settings (evals.score). Inside the DAG the config was
validated already; written by hand, these files are checked against the same rules, so a wrong type or a misspelt
key is named before any weights load instead of failing deep inside, or being ignored."""
import functools
from pathlib import Path

from pixart.inputfiles import read_json_object

CONFIG_SCHEMA = Path(__file__).resolve().parents[1] / "workflows" / "schemas" / "config.schema.yaml"


@functools.cache
def _root() -> dict:
    import yaml

    if not CONFIG_SCHEMA.is_file():  # the suite runs from its checkout (the DAG puts it on PYTHONPATH)
        raise FileNotFoundError(f"{CONFIG_SCHEMA} not found: run the suite from its git checkout, which holds "
                                f"workflows/schemas/")
    return yaml.safe_load(CONFIG_SCHEMA.read_text(encoding="utf-8"))


def _inline(node, root: dict):
    """`node` with every local `$ref` ("#/…") replaced by what it points to in `root`, so one entry's schema can
    be validated on its own (its references point into the whole config schema)."""
    if isinstance(node, list):
        return [_inline(item, root) for item in node]
    if not isinstance(node, dict):
        return node
    if str(node.get("$ref", "")).startswith("#/"):
        target = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        return _inline({**target, **{k: v for k, v in node.items() if k != "$ref"}}, root)
    return {key: _inline(value, root) for key, value in node.items()}


def entry_problem(section: str, value, extra: dict, required=None) -> str | None:
    """How `value` breaks the schema of one entry of the config's `section` (models, scorers), as "key: message",
    or None when it does not. `extra`: properties the DAG adds to the entry it writes; `required` replaces the
    entry's required keys (a spec run by hand needs fewer)."""
    import jsonschema

    entry = _inline(_root()["properties"][section]["additionalProperties"], _root())
    schema = {**entry, "properties": {**entry["properties"], **extra}}
    if required is not None:
        schema["required"] = list(required)
    # by key; at one key a wrong type first (it explains any enum or range error at the same key)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value),
                    key=lambda e: (list(map(str, e.path)), e.validator != "type"))
    if not errors:
        return None
    where = "/".join(map(str, errors[0].path)) or "(top level)"
    return f"{where}: {errors[0].message}"


def read_entry_file(path: Path, section: str, extra: dict, error: type, what: str, required=None) -> dict:
    """A JSON file holding one `section` entry, checked: unreadable, not JSON, not an object or against the schema
    raises `error` naming the file (`what`: the flag and what writes it, for the fix)."""
    value = read_json_object(path, error, what)
    problem = entry_problem(section, value, extra, required)
    if problem:
        raise error(f"{path}: {problem}; {what}")
    return value
