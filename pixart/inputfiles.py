"""Reading an input file a user may have given by hand: a JSON object or a parquet table. Whatever is wrong with it
(missing, a folder, not UTF-8, not JSON or parquet, the wrong shape, columns missing) raises the caller's error
class with one message naming the file, what is wrong and the caller's fix."""
import json
from pathlib import Path


def read_json_object(path: Path, error: type, fix: str) -> dict:
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror or err}); {fix}") from None
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise error(f"{path}: not valid JSON ({err}); {fix}") from None
    if not isinstance(value, dict):
        raise error(f"{path}: expected a JSON object, got a {type(value).__name__}; {fix}")
    return value


def read_parquet_table(path: Path, required, error: type, what: str, fix: str):
    """A parquet file with at least the `required` columns; `what` names it in the message ("results table")."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist or is not a file; {fix}")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise error(f"{what} {path} is not a readable parquet file ({err}); {fix}") from None
    missing = [c for c in required if c not in frame]
    if missing:
        raise error(f"{what} {path} lacks the columns {missing}; {fix}")
    return frame
