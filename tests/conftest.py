"""Shared fixtures. `fleet`: the lab, brought up and converged once for every lab test module;
`lab`: its info, once that first converge succeeded (a module may define its own)."""

import os

import labharness
import pytest

EARLY: list = []  # the shared lab's background bring-up, when this session started one


def pytest_collection_finish(session):
    """Start the shared lab's bring-up now when a selected test will use it (labharness.EarlyBringUp);
    R1LAB_EARLY=0 brings it up at the first lab test instead."""
    if (os.geteuid() != 0 or os.environ.get("R1LAB_EARLY", "1") == "0" or session.config.option.collectonly
            or not any(_uses_shared_lab(item) for item in session.items)):
        return
    EARLY.append(labharness.EarlyBringUp())


def _uses_shared_lab(item) -> bool:
    """This file's `fleet` (through `lab` or directly), not a module's own fixture of that name
    (test_prod_inventory's `fleet` is the prod inventory: a run of it must not touch any lab)."""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.get("fleet", ()) if info else ()
    return bool(defs) and defs[-1].func.__module__ == __name__


def pytest_sessionfinish(session):
    """A bring-up that no lab test took (the run was interrupted before one): stop it, lab down."""
    if EARLY and not EARLY[0].taken:
        EARLY[0].abandon()
        if not os.environ.get("R1LAB_KEEP"):
            labharness.down()


@pytest.fixture(scope="session")
def fleet():
    """(lab info, the first converge). Torn down at the end: `lab down` must leave nothing."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    keep = os.environ.get("R1LAB_KEEP")
    try:
        if EARLY:  # started at collection (pytest_collection_finish): the unit tests ran beside it
            lab, first = EARLY[0].result()
        else:
            lab = labharness.up()
    except BaseException:
        if not keep:  # a lab that came up but could not be read must not outlive the session
            labharness.down()
        raise
    if not EARLY:
        first = labharness.converge()
    yield lab, first
    if not keep:
        assert labharness.down() == [], "lab down left things behind"


@pytest.fixture(scope="module")
def lab(fleet):
    lab, first = fleet
    assert first.returncode == 0, first.out[-8000:]
    return lab
