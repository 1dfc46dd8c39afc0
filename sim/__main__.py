"""``python -m sim``: see ``sim.run``.

Python salts the hashes of str and bytes per process, and the order of a set follows
them; the simulator runs with one fixed salt (``PYTHONHASHSEED=0``, set here by running
again) so that a seed replays the same run in any process.
"""

import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, "-m", "sim", *sys.argv[1:]])

from sim.run import main

sys.exit(main())
