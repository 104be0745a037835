"""Argument types shared by the command-line tools."""
import argparse


def positive_int(text: str) -> int:
    """argparse type of counts and sizes: a negative limit or batch size silently cut or emptied the work."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value
