"""One job path and where it runs: planning, jobs, the runner, worker processes, Dask."""
