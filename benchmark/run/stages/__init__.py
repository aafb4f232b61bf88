"""The runner's stages, one small module each, called in order by `benchmark.run.execute.execute_run`:
plan (config -> model, data, trainer) -> fit -> test -> external -> timing -> record."""
