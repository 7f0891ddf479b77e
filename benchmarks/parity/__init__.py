"""Update-for-update comparisons with each algorithm's official implementation (see __main__ and common)."""
