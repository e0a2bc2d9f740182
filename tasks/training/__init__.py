"""From a CSV to an exported model version.

    data.py       read the training CSV and hold it to the contract, or draft a contract from it
    train.py      the TabularANN: stratified K-fold cross-validation, then the final fit
    calibrate.py  isotonic or sigmoid on out-of-fold scores, measured cross-fitted
    export.py     models/<name>/<N>/: SavedModel, calibrator.pkl, metadata.json, atomically
"""
