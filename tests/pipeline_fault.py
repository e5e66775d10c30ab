"""train.py with a fault injected into one pipeline stage (used by the pipeline tests under torchrun).

FAULT=hang: the stage stops answering (sleeps) after a few module steps; FAULT=exit: it dies (exit 9);
FAULT unset: no fault (the test sends signals itself). FAULT_RANK: which rank fails. With RUN_STATE_DIR,
each rank writes its pid (rank<r>.pid) when it starts and its exit status (rank<r>.rc) when it ends.
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
    if _calls > 3 and os.environ.get("RANK") == os.environ.get("FAULT_RANK"):
        if os.environ.get("FAULT") == "hang":
            time.sleep(600)
        if os.environ.get("FAULT") == "exit":
            os._exit(9)
    return _real(*args, **kwargs)


pipeline.train_greedy_module = faulty

if __name__ == "__main__":
    state = os.environ.get("RUN_STATE_DIR")
    if state:
        Path(state, f"rank{os.environ['RANK']}.pid").write_text(str(os.getpid()))
    rc = train.main()
    if state:
        Path(state, f"rank{os.environ['RANK']}.rc").write_text(str(rc))
    sys.exit(rc)
