"""Entry point: `python /path/to/train.py` (the directory holding this file goes on sys.path)."""

import sys

from intent_classifier.train import main

sys.exit(main())
