import sys

from availmon.cli import main

sys.exit(main())
