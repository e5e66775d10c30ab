"""`python -m mrirecon COMMAND ...`: the same as the installed `mrirecon` command."""
import sys

from .cli import main

sys.exit(main())
