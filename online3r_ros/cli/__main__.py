"""``python -m online3r_ros.cli ...`` = the ``online3r`` console script."""

import sys

from online3r_ros.cli.main import main

sys.exit(main())
