"""The CLI layer: `manymodels` verbs, exit codes, progress bars and tables."""
