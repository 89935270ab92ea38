import sys

from r1deploy.cli import main

sys.exit(main())
