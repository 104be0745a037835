"""What the command-line tools share: argument types, and one clean line for the suite's own errors."""
import argparse
import functools
import os
import sys

SUITE_PACKAGES = ("pixart", "evals", "reports")
TRACEBACK_ENV = "PIXART_EVAL_TRACEBACK"


class UsageError(ValueError):
    """A command-line value that cannot be used (a device, an output path); the message names the option."""


def positive_int(text: str) -> int:
    """argparse type of counts and sizes: a negative limit or batch size silently cut or emptied the work."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def non_negative_int(text: str) -> int:
    """argparse type of counts where 0 means none (--worst-k 0): a negative one is refused, not read as 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number ≥ 0")
    return value


def clean_errors(prog: str):
    """Decorator of a CLI's `main(argv=None)`: an error this suite raises on purpose (a class of its own packages,
    whose message names the file or key and the fix) ends in one `prog: error: …` line and exit 2, as argparse's
    do; anything else keeps its traceback, and so does every error with PIXART_EVAL_TRACEBACK=1."""
    def wrap(main):
        @functools.wraps(main)
        def guarded(argv=None):
            try:
                return main(argv)
            except Exception as err:  # noqa: BLE001 - re-raised unless it is one of the suite's own
                if os.environ.get(TRACEBACK_ENV) or not _raised_on_purpose(err):
                    raise
                print(f"{prog}: error: {err}\n({type(err).__name__}; {TRACEBACK_ENV}=1 shows the traceback)",
                      file=sys.stderr)
                raise SystemExit(2) from None
        return guarded
    return wrap


def _raised_on_purpose(err: Exception) -> bool:
    """Whether `err`'s class belongs to the suite, also when it is defined in the module run with `python -m`
    (there its module is `__main__`, e.g. FeatureError under `python -m pixart.train.features`)."""
    module = type(err).__module__
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else module
    return module.split(".")[0] in SUITE_PACKAGES
