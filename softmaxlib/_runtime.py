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


def _runs(kernel, backend, threads):
    """{'backend', 'kernel'[, 'beyond', 'crossover_elements', 'crossover_source']} for a kernel id
    or auto function; for the auto path, its crossover with `threads` threads (resolved now: the
    probe may run), and 'beyond' only if it switches at all."""
    if isinstance(kernel, tuple):
        in_cache, beyond, _ = _auto.CHOICES[kernel[1], backend]
        runs = {"backend": backend, "kernel": in_cache}
        if beyond is not None:
            crossover, source = _auto.crossover(kernel[1], backend, threads)
            if crossover is not None:
                runs.update(beyond=beyond, crossover_elements=crossover, crossover_source=source)
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
        and catalog kernel id that run now (for the auto path, with the default thread count,
        also the kernel beyond the crossover, the crossover, the longest row in elements that
        stays on the first, and where it comes from), and "available", the backends it can run
        on; "backends": usable ones, the default and whether SOFTMAXLIB_BACKEND forced it;
        "threads": the default thread count and the cores available; "cpu_features"; "caches"
        and "last_level_cache" as the OS reports them (under a hypervisor possibly the host's);
        "auto": how the auto path decides on the default backend (softmaxlib/_auto.py): per
        function its crossover for 1 thread and the default count, each from "probe" (the
        model, from a short probe of this machine, kept in "cache_file"), "tune" (`softmaxlib
        tune`) or a cache size set by hand; the probe's read rates per thread count ("memory",
        with the "effective_cache": the largest size read clearly faster than main memory) and
        the kernels' ns per element in cache; "versions". The probe runs here if no call has
        needed it yet (under 0.1 s, once per machine: its results are kept).

    Examples
    --------
    >>> import softmaxlib
    >>> info = softmaxlib.runtime_info()
    >>> info["functions"]["softmaxlib.two_pass.softmax"]["float64"]
    {'backend': 'numba', 'kernel': 'softmax_two_pass'}
    """
    from ._threads import available_cores, get_num_threads

    default = _dispatch.DEFAULT_BACKEND
    threads = get_num_threads()
    functions = {}
    for name, kernel in _public_kernels():
        kernel_id = kernel if isinstance(kernel, str) else None
        float64 = kernel_id is None or "f64" in _catalog.KERNELS[kernel_id].twin_dtypes
        functions[name] = {"float32": _runs(kernel, default, threads), "available": list(_dispatch.USABLE_BACKENDS)}
        if float64:
            functions[name]["float64"] = _runs(kernel, "numba", threads)
    return {
        "version": __version__,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "c_kernels_built": _dispatch.lib is not None,
        "cpu_features": [name for name, present in _dispatch.CPU_FEATURES.items() if present],
        "backends": {"usable": list(_dispatch.USABLE_BACKENDS), "default": default,
                     "forced_by": _dispatch.ENV_VAR if _dispatch.FORCED_BACKEND else None},
        "threads": {"default": threads, "available_cores": available_cores()},
        "caches": dict(_dispatch.CACHE_SIZES),
        "last_level_cache": _dispatch.REPORTED_LAST_LEVEL_CACHE_BYTES,
        "auto": _auto.describe(default, sorted({1, threads})),
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
    print(f"caches as reported: {caches or 'unknown'}; threads: {info['threads']['default']} by default, "
          f"{info['threads']['available_cores']} cores available")
    for line in _auto_lines(info["auto"]):
        print(line)
    for name, runs in info["functions"].items():
        parts = []
        for dtype in ("float32", "float64"):
            if dtype in runs:
                run = runs[dtype]
                text = f"{dtype}: {run['kernel']} on {run['backend']}"
                if "beyond" in run:
                    text += f", {run['beyond']} above {run['crossover_elements']} elements ({run['crossover_source']})"
                parts.append(text)
        print(f"  {name}: {'; '.join(parts)}")


def _mib(nbytes):
    return f"{nbytes / 2 ** 20:g} MiB"


def _auto_lines(auto):
    """show_runtime()'s lines on the auto path: where its crossovers come from, and each."""
    hand_set = auto["cache_set_by_hand"]
    if hand_set is not None:
        lines = [f"auto path: a cache of {_mib(hand_set['bytes'])} set by {hand_set['by']}: crossovers at the "
                 f"table's fractions of it"]
    elif "cache_file" in auto:
        read = ", read" if auto["cache_file_read"] else ""
        probed = ", ".join(f"{kind} {what}" for kind, what in auto["probed_in_this_process"]) or "nothing"
        lines = [f"auto path: crossovers from this machine: its probe, or tune (cache file: {auto['cache_file'] or 'off'}"
                 f"{read}; probed now: {probed})"]
        for threads, memory in auto["memory"].items():
            rates = ", ".join(f"{_mib(size)} {rate:.0f}" for size, rate in zip(memory["sizes"], memory["read_gb_s"]))
            lines.append(f"  {threads} thread{'s' if threads > 1 else ''}: read GB/s {rates}; main memory "
                         f"{memory['memory_gb_s']:.0f}; effective cache {_mib(memory['effective_cache'])}")
    else:
        return []
    for function, by_threads in auto["crossovers"].items():
        parts = [f"{threads} thread{'s' if threads > 1 else ''}: "
                 f"{'never' if entry['elements'] is None else entry['elements']} ({entry['source']})"
                 for threads, entry in by_threads.items()]
        lines.append(f"  {function} switches above (elements in flight): {'; '.join(parts)}")
    return lines
