import sys

from trackpipe.cli import main

sys.exit(main())
