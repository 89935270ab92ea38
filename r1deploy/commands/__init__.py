"""Command-line entry points that load inventories: they sit on top of the core's domains (planner/,
serving/, fleet/, observe/, ...) and may import any of them; the domains never import these."""
