import sys

from vlpbench.cli import main

sys.exit(main())
