"""softmaxlib's controller for threadpoolctl (an optional dependency, >= 3.5).

With it, threadpoolctl.threadpool_limits(k) limits softmaxlib too (it sets the default of
set_num_threads(), and restores it on leaving the block) and threadpoolctl.threadpool_info()
lists softmaxlib, user_api "softmaxlib", with num_threads = get_num_threads().

threadpoolctl finds the libraries it controls among the shared libraries loaded in the process,
by file name, then symbols; the controller matches softmaxlib's C extension (softmaxlib._kernels)
by its file name and its sml_build_version symbol. Without the C extension (Numba only, which is
single-threaded) nothing matches: threadpool_info() does not list softmaxlib, and
threadpool_limits(user_api="softmaxlib") is accepted and does nothing.

Registered at import when threadpoolctl is installed, which imports it: 1.5 to 1.9 ms (median
1.67 ms over 15 runs of `python -X importtime -c "import softmaxlib, threadpoolctl"`, bytecode
cached) on softmaxlib's 16 to 22 ms over NumPy's. An import hook could defer that until the user
imports threadpoolctl, at the price of a finder in sys.meta_path for every import of the
process: not worth 2 ms.
"""
import os
import warnings
import weakref

USER_API = "softmaxlib"

# threadpoolctl module objects registered with (a module re-imported after being deleted from
# sys.modules is a new object, with a new list of controllers, and softmaxlib's import is once).
_registered = weakref.WeakSet()


def _controller_class(threadpoolctl):
    """softmaxlib's LibController subclass, for this threadpoolctl module."""
    from . import _dispatch, _threads
    from ._version import __version__

    kernels = _dispatch._kernels
    # threadpoolctl compares the lower-cased base name of each loaded library with the prefixes,
    # e.g. "_kernels.abi3.so"; then keeps it if it has one of check_symbols.
    prefixes = (os.path.basename(kernels.__file__).lower(),) if kernels is not None else ()

    class SoftmaxlibController(threadpoolctl.LibController):
        user_api = USER_API
        internal_api = USER_API
        filename_prefixes = prefixes
        check_symbols = ("sml_build_version",)

        def get_num_threads(self):
            return _threads.get_num_threads()

        def set_num_threads(self, num_threads):
            _threads.set_num_threads(num_threads)

        def get_version(self):
            return __version__

        def set_additional_attributes(self):
            self.available_cores = _threads.available_cores()

    return SoftmaxlibController


def _register(threadpoolctl):
    """Registers the controller with this threadpoolctl module, once; a threadpoolctl older than 3.5
    (no `register`) is left alone. Never raises: softmaxlib's import must not fail for it."""
    if threadpoolctl in _registered or not hasattr(threadpoolctl, "register"):
        return
    try:
        threadpoolctl.register(_controller_class(threadpoolctl))
    except Exception as error:  # an incompatible threadpoolctl: warn, do not break softmaxlib's import
        warnings.warn(f"softmaxlib could not register its threadpoolctl controller: {error!r}", RuntimeWarning,
                      stacklevel=2)
        return
    _registered.add(threadpoolctl)


def register_threadpoolctl():
    """Makes threadpoolctl (if installed) list and limit softmaxlib. Idempotent."""
    try:
        import threadpoolctl
    except ImportError:
        return
    _register(threadpoolctl)
