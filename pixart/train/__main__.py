"""`python -m pixart.train --recipe R --out DIR`: the training loop's CLI (pixart/train/loop.py)."""
from pixart.train.loop import main

main()
