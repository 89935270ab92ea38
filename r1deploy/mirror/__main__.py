import sys

from r1deploy.mirror.cli import main

sys.exit(main())
