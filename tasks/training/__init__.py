"""From a CSV to an exported model version.

    data.py       read the training CSV and hold it to the contract, or draft a contract from it
    train.py      stratified K-fold cross-validation; the fold models, fused, are the model that ships
    network.py    the TabularANN graph: in-graph preprocessing, PLR numeric embeddings, fused ensemble
    calibrate.py  isotonic or sigmoid on out-of-fold scores, measured cross-fitted
    export.py     models/<name>/<N>/: SavedModel, calibrator.pkl, metadata.json, atomically
"""
