"""Online serving: one process (or a few) answering for every segment of a model family, following its champion.

`run.serve` starts it (the `manymodels serve` command); `server.Server` holds the version that
answers and follows the alias; `app` is the HTTP face (MLflow's scoring protocol and an
operator's endpoints); `protocol` reads requests and writes answers; `live` is one loaded version.
"""
