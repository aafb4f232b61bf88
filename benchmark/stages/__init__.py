"""The runner's stages, one small module each, called in order by `benchmark.execute.execute_run`:
plan (config -> model, data, trainer) -> fit -> test -> external -> timing -> record."""
