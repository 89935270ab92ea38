"""One package per deploy stage, each with a single @deploy entry and its custom facts beside it."""
