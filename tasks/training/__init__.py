"""From a CSV to an exported model version.

    data.py       read the training CSV and hold it to the contract, or draft a contract from it
    train.py      the TabularANN: stratified K-fold cross-validation, then the final fit
    calibrate.py  none, sigmoid, beta or isotonic on out-of-fold scores, each measured cross-fitted; auto chooses
    export.py     models/<name>/<N>/: SavedModel, calibrator.pkl, metadata.json, atomically
"""
