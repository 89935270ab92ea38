import sys

from lab.labctl import main

sys.exit(main())
