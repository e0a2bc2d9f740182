"""Batch scoring: a registered version scores a file of any size through the contract and the model the server uses.

    source.py  the input (CSV or Parquet, a file or a directory), read in chunks
    chunk.py   one chunk typed and checked by the contract, scored by the server's model call
    output.py  the scores and the rejects file, written together or not at all
    job.py     the version resolved and verified, the job checked, then run serially
    record.py  the batch's drift (the monitoring's PSI and rules) and the MLflow run linked to the version

Plain functions, no Prefect: ``flows/score.py`` is the command and the flow.
"""
