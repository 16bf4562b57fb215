"""`python -m finetune_trainer --config PATH`: run one TrainerConfig (what the trainer pod runs)."""

from __future__ import annotations

import sys

from .cli import main_config

if __name__ == "__main__":
    sys.exit(main_config(sys.argv[1:]))
