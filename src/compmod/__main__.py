import sys

from compmod.cli import main

sys.exit(main())
