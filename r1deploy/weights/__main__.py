import sys

from r1deploy.weights.cli import main

sys.exit(main())
