"""For every test run (tests/ and bench/): the auto path's probe results (softmaxlib/_tune.py) go to a
temporary folder, never to the user's ~/.cache/softmaxlib."""
import atexit
import os
import shutil
import tempfile

if "SOFTMAXLIB_CACHE_DIR" not in os.environ:
    os.environ["SOFTMAXLIB_CACHE_DIR"] = tempfile.mkdtemp(prefix="softmaxlib-tests-")
    atexit.register(shutil.rmtree, os.environ["SOFTMAXLIB_CACHE_DIR"], True)
