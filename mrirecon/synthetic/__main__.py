"""`python -m mrirecon.synthetic ...`: the same as `mrirecon synth ...`."""
import sys

from ..cli.synth import main

sys.exit(main())
