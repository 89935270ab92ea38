"""Shared fixtures. `fleet`: the lab, brought up and converged once for every lab test module;
`lab`: its info, once that first converge succeeded (a module may define its own)."""

import os

import labharness
import pytest


@pytest.fixture(scope="session")
def fleet():
    """(lab info, the first converge). Torn down at the end: `lab down` must leave nothing."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    keep = os.environ.get("R1LAB_KEEP")
    try:
        lab = labharness.up()
    except BaseException:
        if not keep:  # a lab that came up but could not be read must not outlive the session
            labharness.down()
        raise
    first = labharness.converge()
    yield lab, first
    if not keep:
        assert labharness.down() == [], "lab down left things behind"


@pytest.fixture(scope="module")
def lab(fleet):
    lab, first = fleet
    assert first.returncode == 0, first.out[-8000:]
    return lab
