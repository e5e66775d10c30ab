"""train.py with a fault injected into one pipeline stage (used by tests/test_pipeline.py under torchrun).

FAULT=hang: the stage stops answering (sleeps) after a few module steps; FAULT=exit: it dies (exit 9).
FAULT_RANK: which rank fails.
"""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mrirecon.distributed.pipeline as pipeline  # noqa: E402
import train  # noqa: E402

_real = pipeline.train_greedy_module
_calls = 0


def faulty(*args, **kwargs):
    global _calls
    _calls += 1
    if _calls > 3 and os.environ.get("RANK") == os.environ["FAULT_RANK"]:
        if os.environ["FAULT"] == "hang":
            time.sleep(600)
        os._exit(9)
    return _real(*args, **kwargs)


pipeline.train_greedy_module = faulty

if __name__ == "__main__":
    sys.exit(train.main())
