"""``python -m videoccam``: the ``videoccam`` command."""

import sys

from videoccam_cli import main

if __name__ == "__main__":
    sys.exit(main())
