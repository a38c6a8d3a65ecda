"""`pytest bench` alone: the auto path's probe results go to a temporary folder, as in tests/conftest.py."""
import os
import tempfile

os.environ.setdefault("SOFTMAXLIB_CACHE_DIR", tempfile.mkdtemp(prefix="softmaxlib-bench-"))
