"""`python -m vlbench.cli ...`: the `vlbench` command, for a process that must run this interpreter's vlbench."""
import sys

from vlbench.cli import main

sys.exit(main())
