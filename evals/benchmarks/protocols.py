"""Benchmark protocol files (lm-evaluation-harness style): load, validate, resolve and hash-check sources.

A protocol file `evals/benchmarks/<name>.yaml` states everything that makes two numbers comparable:
version (+ changelog), prompt sources with sha256, images per prompt, seed rule, resolution,
preprocessing, scorers, aggregation and deviations from the original benchmark. Shipped data paths
are relative to the protocol file, so a protocol copied elsewhere together with its data still loads.
"""
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import yaml
from evals.files import sha256_file  # noqa: F401  (re-exported)

PROTOCOL_DIR = Path(__file__).resolve().parent
SOURCE_FORMATS = ("prompt_file", "compbench_lines", "geneval_jsonl", "wise_json", "sam_list")

_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_SOURCE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["format"],
    "properties": {
        "format": {"enum": list(SOURCE_FORMATS)},
        "description": {"type": "string"},
        # exactly one of: a shipped file (+ its hash), files the user must supply (+ hashes), or a user path
        "file": {"type": "string"},
        "sha256": _SHA256,
        "user_files": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "sha256"],
            "properties": {"name": {"type": "string"}, "sha256": _SHA256}}},
        "user": {"type": "string"},
        "column": {"type": "string"},
        "n": {"type": "integer", "minimum": 1},
        "distinct": {"type": "string", "description": "a metadata column whose values must not repeat"},
        "groups": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "oneOf": [{"required": ["file", "sha256"]}, {"required": ["user_files"]}, {"required": ["user"]}],
}
SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "version", "changelog", "description", "sources", "default_subset",
                 "images_per_prompt", "seed", "resolution", "preprocessing", "scorers", "aggregation", "notes"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "version": {"type": "integer", "minimum": 1},
        "changelog": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
        "description": {"type": "string"},
        "license": {"type": "string"},
        "upstream": {"type": "object"},
        "sources": {"type": "object", "minProperties": 1, "additionalProperties": _SOURCE},
        "default_subset": {"type": ["string", "null"]},
        "auxiliary": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": False, "required": ["file", "sha256"],
            "properties": {"file": {"type": "string"}, "sha256": _SHA256, "description": {"type": "string"}}}},
        "images_per_prompt": {"type": "integer", "minimum": 1},
        "seed": {"type": "object", "additionalProperties": False, "required": ["rule", "base"],
                 "properties": {"rule": {"enum": ["per_image", "per_sample"]}, "base": {"type": "integer"}}},
        "resolution": {"type": "object", "additionalProperties": False, "required": ["height", "width"],
                       "properties": {"height": {"type": ["integer", "null"], "minimum": 1},
                                      "width": {"type": ["integer", "null"], "minimum": 1}}},
        "preprocessing": {"type": "string"},
        "reference": {"type": "object"},
        "categories": {"type": "object", "additionalProperties": {
            "type": "object", "additionalProperties": False, "required": ["first_id", "last_id", "weight"],
            "properties": {"first_id": {"type": "integer"}, "last_id": {"type": "integer"},
                           "weight": {"type": "number"}}}},
        "scorers": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "aggregation": {"type": "string"},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
}


class ProtocolError(ValueError):
    """A protocol file is missing, malformed, or asked for something it does not define."""


class DataIntegrityError(ValueError):
    """A data file differs from the bytes the protocol was written for."""




def verify_sha256(path: Path, expected: str, fix: str) -> Path:
    """Return `path` if its sha256 is `expected`; otherwise fail naming both hashes and the fix."""
    path = Path(path)
    if not path.is_file():
        raise DataIntegrityError(f"{path} does not exist. {fix}")
    actual = sha256_file(path)
    if actual != expected:
        raise DataIntegrityError(f"{path}: sha256 {actual} does not match the expected {expected}. {fix}")
    return path


@dataclass(frozen=True)
class Protocol:
    path: Path
    spec: dict

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def version(self) -> int:
        return self.spec["version"]

    @property
    def tag(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def images_per_prompt(self) -> int:
        return self.spec["images_per_prompt"]

    @property
    def seed_rule(self) -> str:
        return self.spec["seed"]["rule"]

    @property
    def seed_base(self) -> int:
        return self.spec["seed"]["base"]

    def subset(self, name: str | None) -> tuple[str, dict]:
        """(subset name, source entry); None picks the protocol's default subset."""
        name = name or self.spec["default_subset"]
        if name is None:
            raise ProtocolError(f"{self.path}: choose a subset, one of {sorted(self.spec['sources'])}")
        if name not in self.spec["sources"]:
            raise ProtocolError(f"{self.tag} has no subset {name!r}; known: {sorted(self.spec['sources'])}")
        return name, self.spec["sources"][name]

    def shipped_file(self, entry: dict) -> Path:
        """A file shipped with the suite, hash-checked against the protocol."""
        path = self.path.parent / entry["file"]
        return verify_sha256(path, entry["sha256"],
                             f"The suite ships this file unmodified; restore it (git checkout -- {path.name}) "
                             f"or bump {self.path.name}'s version and hash if the change is deliberate.")

    def auxiliary_file(self, key: str) -> Path:
        if key not in self.spec.get("auxiliary", {}):
            raise ProtocolError(f"{self.path}: no auxiliary file {key!r}")
        return self.shipped_file(self.spec["auxiliary"][key])


def list_protocols() -> list[str]:
    return sorted(p.stem for p in PROTOCOL_DIR.glob("*.yaml"))


def load_protocol(name_or_path: str | Path) -> Protocol:
    """Load `evals/benchmarks/<name>.yaml` (or any protocol file path) and validate it."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROTOCOL_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ProtocolError(f"no protocol file {path}; known benchmarks: {list_protocols()}")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ProtocolError(f"{path}: not valid YAML ({err})") from None
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(spec), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(top level)"
        raise ProtocolError(f"{path}: {where}: {errors[0].message}")
    if str(spec["version"]) not in {str(k) for k in spec["changelog"]}:
        raise ProtocolError(f"{path}: version {spec['version']} has no changelog line; add one saying what changed")
    if spec["default_subset"] is not None and spec["default_subset"] not in spec["sources"]:
        raise ProtocolError(f"{path}: default_subset {spec['default_subset']!r} is not one of the sources")
    return Protocol(path=path.resolve(), spec=spec)
