"""objrec's tests, laid out like the packages they test; fixtures in conftest.py."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent
