"""Model server for exported TabularANN models.

Self-contained: ships to target hosts inside the release bundle, so it imports
nothing from ``flows/``, ``tasks/``, Prefect or MLflow. The pieces both sides need
(the data contract, the calibrators, the metric maths, the metadata format) live
here and the training side imports them, so training and serving cannot drift.
"""
