"""`liverbench run` and `crossval`: plan, stages, shards, locks' users, records, convergence."""
