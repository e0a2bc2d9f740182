"""From a CSV to an exported model version.

    data.py       read the training CSV and hold it to the contract, or draft a contract from it
    sources.py    CSV or Parquet, on disk or at s3://, with the bytes' SHA-256; columns.py types Arrow columns
    train.py      stratified K-fold cross-validation; the fold models, fused, are the model that ships
    network.py    the TabularANN graph: in-graph preprocessing, PLR numeric embeddings, fused ensemble
    calibrate.py  none, sigmoid, beta or isotonic on out-of-fold scores, each measured cross-fitted; auto chooses
    export.py     models/<name>/<N>/: SavedModel, calibrator.pkl, metadata.json, atomically
"""
