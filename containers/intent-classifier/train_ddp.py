"""Entry point of the DDP form: `python /path/to/train_ddp.py` (the directory holding this file goes on sys.path)."""

from intent_classifier.train_ddp import main

main()
