"""What runs here: softmaxlib.runtime_info() and show_runtime()."""
import platform

from . import _auto, _catalog, _dispatch
from ._version import __version__

AUTO_FUNCTIONS = ("softmax", "log_softmax")


def _public_kernels():
    """(public name, kernel id or auto function) of every public function, in catalog order."""
    entries = [(f"softmaxlib.{function}", ("auto", function)) for function in AUTO_FUNCTIONS]
    entries.append(("softmaxlib.logsumexp", "sum_exp_pair"))
    for kernel in _catalog.KERNELS.values():
        if kernel.function is not None:
            variant = f"(variant={kernel.variant!r})" if kernel.variant else ""
            entries.append((f"softmaxlib.{kernel.family}.{kernel.function}{variant}", kernel.id))
    return entries


def _runs(kernel, backend):
    """{'backend', 'kernel'[, 'beyond', 'crossover_elements']} for a kernel id or auto function."""
    if isinstance(kernel, tuple):
        in_cache, beyond, crossover = _auto.choice(kernel[1], backend)
        runs = {"backend": backend, "kernel": in_cache}
        if beyond is not None:
            runs.update(beyond=beyond, crossover_elements=crossover)
        return runs
    return {"backend": backend, "kernel": kernel}


def _version(package):
    import importlib.metadata  # here, not at import: it takes 10 ms

    try:
        return importlib.metadata.version(package)  # without importing the package (Numba takes 0.4 s)
    except importlib.metadata.PackageNotFoundError:
        return None


def runtime_info():
    """What runs on this machine, as a dict.

    Returns
    -------
    dict
        "functions": per public function, per input dtype ("float32", "float64"), the backend
        and catalog kernel id that run now (for the auto path also the kernel beyond the
        crossover and the crossover, the longest row in elements that stays on the first), and
        "available", the backends it can run on; "backends": usable ones, the default and whether
        SOFTMAXLIB_BACKEND forced it; "cpu_features"; "caches" as the OS reports them (under a
        hypervisor possibly the host's) and "last_level_cache" used by the auto path; "versions".

    Examples
    --------
    >>> import softmaxlib
    >>> info = softmaxlib.runtime_info()
    >>> info["functions"]["softmaxlib.two_pass.softmax"]["float64"]
    {'backend': 'numba', 'kernel': 'softmax_two_pass'}
    """
    default = _dispatch.DEFAULT_BACKEND
    functions = {}
    for name, kernel in _public_kernels():
        kernel_id = kernel if isinstance(kernel, str) else None
        float64 = kernel_id is None or "f64" in _catalog.KERNELS[kernel_id].twin_dtypes
        functions[name] = {"float32": _runs(kernel, default), "available": list(_dispatch.USABLE_BACKENDS)}
        if float64:
            functions[name]["float64"] = _runs(kernel, "numba")
    return {
        "version": __version__,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "c_kernels_built": _dispatch.lib is not None,
        "cpu_features": [name for name, present in _dispatch.CPU_FEATURES.items() if present],
        "backends": {"usable": list(_dispatch.USABLE_BACKENDS), "default": default,
                     "forced_by": _dispatch.ENV_VAR if _dispatch.FORCED_BACKEND else None},
        "caches": dict(_dispatch.CACHE_SIZES),
        "last_level_cache": _dispatch.LAST_LEVEL_CACHE_BYTES,
        "stream_above_bytes": _dispatch.STREAM_ABOVE_BYTES,
        "functions": functions,
        "versions": {package: _version(package) for package in ("numpy", "cffi", "numba")},
    }


def show_runtime():
    """Prints runtime_info(): the CPU features, the backend and kernel of every public function
    (quantization included), the caches and the versions in use.

    Returns
    -------
    None

    Examples
    --------
    >>> import softmaxlib
    >>> softmaxlib.show_runtime()  # doctest: +SKIP
    """
    info = runtime_info()
    print(f"softmaxlib {info['version']} on {info['machine']}, Python {info['python']}")
    print("versions: " + ", ".join(f"{name} {version}" for name, version in info["versions"].items()))
    if not info["c_kernels_built"]:
        print("C kernels: not built (Numba backend only)")
    else:
        print(f"CPU features: {' '.join(info['cpu_features']) or 'none of interest'}")
    backends = info["backends"]
    forced = f" (forced by {backends['forced_by']})" if backends["forced_by"] else ""
    print(f"backends usable: {', '.join(backends['usable'])}; default: {backends['default']}{forced}")
    caches = ", ".join(f"{level} {size >> 10} KiB" for level, size in info["caches"].items())
    print(f"caches as reported: {caches or 'unknown'}; last level used: {info['last_level_cache'] >> 10} KiB")
    for name, runs in info["functions"].items():
        parts = []
        for dtype in ("float32", "float64"):
            if dtype in runs:
                run = runs[dtype]
                text = f"{dtype}: {run['kernel']} on {run['backend']}"
                if "beyond" in run:
                    text += f", {run['beyond']} above {run['crossover_elements']} elements"
                parts.append(text)
        print(f"  {name}: {'; '.join(parts)}")
