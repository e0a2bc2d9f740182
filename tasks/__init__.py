"""The release stages, as plain functions and classes grouped by what they decide.

    training/    data (validate, infer a contract), train, calibrate, export
    registry/    MLflow: runs, registered versions, aliases, the export cache
    release/     versioning, the quality gate, champion-vs-candidate comparison, reports
    deploy/      package, transports (local, ssh, s3), deploy to hosts, smoke test
    monitoring/  probes of what was deployed

    settings.py   the one configuration model (configs/pipeline.yaml + environment)
    constants.py  shared names and numbers; errors.py the pipeline's exception tree;
    metrics.py    the release metrics (scikit-learn, and ECE from serving.contract.binning)

Nothing here imports Prefect: the ``@task`` wrappers live in ``flows/stages.py``. The packages
are layered (monitoring → deploy, release → registry → training → the modules above), and
import-linter checks it (``make lint``).
"""
