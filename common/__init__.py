"""The bottom layer: what every other package of ours uses, importing nothing of ours.

`files`: the one error type for bad input (`DataError(path, problem)`) and atomic writes;
`locks`: lock files that work on shared filesystems;
`slice_context`: 2.5D input (neighbouring slices as channels), the one definition for data and models.
"""
