"""r1deploy: the functional core (spec, planner, catalog, hub mirror, smoke, drift). No SSH here."""

__version__ = "0.1.0"
