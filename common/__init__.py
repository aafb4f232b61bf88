"""The bottom layer: what every other package of ours uses, importing nothing of ours.

`files`: the one error type for bad input (`DataError(path, problem)`) and atomic writes;
`locks`: lock files that work on shared filesystems.
"""
