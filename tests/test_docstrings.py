"""The public API's docstrings: numpydoc sections on every public function, and doctests that pass.

help() and IDEs show these docstrings; NumPy and SciPy users expect Parameters, Returns and
Examples sections, and Examples that run. (1) checks the sections, (2) runs every module's
doctests with the standard library's doctest.
"""
import doctest
import inspect
import re

import numpy as np
import pytest

import softmaxlib
from softmaxlib import _codebooks, _runtime, _threads, diagnostics, optim, quant, stablemax, three_pass, two_pass

SUBMODULES = (three_pass, two_pass, stablemax, quant, diagnostics, optim)
# Where the public functions' docstrings are defined: softmaxlib re-exports runtime_info and
# show_runtime from _runtime, quant create_dynamic_map and create_linear_map from _codebooks.
DOCTEST_MODULES = (softmaxlib, _runtime, _codebooks, _threads) + SUBMODULES
# Functions that return None (they print or set), for which numpydoc has no Returns section.
RETURN_NOTHING = {"softmaxlib.show_runtime", "softmaxlib.set_num_threads"}


def _public_callables():
    """{qualified name: object}: the callables of softmaxlib.__all__; the public callables defined
    in each submodule or listed in its __all__; QuantState and its public methods."""
    found = {f"softmaxlib.{name}": getattr(softmaxlib, name) for name in softmaxlib.__all__
             if callable(getattr(softmaxlib, name)) and not inspect.ismodule(getattr(softmaxlib, name))}
    for module in SUBMODULES:
        for name, value in vars(module).items():
            public = getattr(value, "__module__", None) == module.__name__ or name in getattr(module, "__all__", ())
            if not name.startswith("_") and callable(value) and public:
                found[f"{module.__name__}.{name}"] = value
    for name, value in vars(quant.QuantState).items():
        if not name.startswith("_") and callable(getattr(quant.QuantState, name)):
            found[f"softmaxlib.quant.QuantState.{name}"] = getattr(quant.QuantState, name)
    return found


PUBLIC = _public_callables()


def _sections(doc):
    """The numpydoc section titles of a docstring: a line, then a line of as many dashes."""
    return {title for title, dashes in re.findall(r"^(\w[\w ]*)\n(-+)$", doc, re.M) if len(dashes) == len(title)}


def test_the_public_api_is_found():
    expected = {"softmaxlib.softmax", "softmaxlib.logsumexp", "softmaxlib.backends", "softmaxlib.runtime_info",
                "softmaxlib.three_pass.softmax", "softmaxlib.two_pass.merge_pairs", "softmaxlib.stablemax.s",
                "softmaxlib.stablemax.stablemax_cross_entropy", "softmaxlib.quant.QuantState",
                "softmaxlib.quant.QuantState.as_dict", "softmaxlib.quant.QuantState.from_dict",
                "softmaxlib.quant.create_dynamic_map", "softmaxlib.quant.create_linear_map",
                "softmaxlib.diagnostics.stablemax_margin"}
    assert expected <= set(PUBLIC)
    assert not any(name.rsplit(".", 1)[-1] in ("np", "dataclass", "math", "operator") for name in PUBLIC)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_numpydoc_sections(name):
    obj = PUBLIC[name]
    doc = inspect.getdoc(obj)
    assert doc, f"{name} has no docstring"
    sections = _sections(doc)
    required = {"Examples"}
    if set(inspect.signature(obj).parameters) - {"self"}:  # a class's or classmethod's lacks cls already
        required.add("Parameters")
    if not inspect.isclass(obj) and name not in RETURN_NOTHING:
        required.add("Returns")
    missing = required - sections
    assert not missing, f"{name}'s docstring lacks the numpydoc section(s) {', '.join(sorted(missing))}"
    assert ">>>" in doc.split("Examples\n--------", 1)[1], f"{name}'s Examples hold no doctest"


def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for module in DOCTEST_MODULES:
        tests += [test for test in finder.find(module) if test.examples]
    return tests


DOCTESTS = _doctests()


def test_every_public_function_has_its_doctests_run():
    """Every documented function's Examples are among the doctests run (none is missed by the
    finder, e.g. for a function defined in another module than the one searched)."""
    run = {test.name.split(".")[-1] for test in DOCTESTS}
    assert {name.rsplit(".", 1)[-1] for name in PUBLIC} <= run


@pytest.mark.parametrize("test", DOCTESTS, ids=lambda test: test.name)
def test_doctest(test):
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    report = []
    with np.printoptions(precision=8, linewidth=75, suppress=False, legacy=False):  # NumPy's defaults
        result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)
