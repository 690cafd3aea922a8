import sys

from luse.cli.main import main

sys.exit(main())
