import sys

from callsense.cli.main import main

sys.exit(main())
