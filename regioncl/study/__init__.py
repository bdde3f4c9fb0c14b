"""Studies: sets of runs described as data, their tables and their plots."""
