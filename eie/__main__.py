import sys

from eie.cli import main

sys.exit(main())
