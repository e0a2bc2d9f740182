"""The HTTP layer: the FastAPI app (``serving.api.app:app``) built from routers.

    app                the app factory, its lifespan and its exception handler
    server             ServerState: what one server process holds (``app.state.server``)
    auth               bearer tokens as dependencies (admin, read, feedback)
    accounting         AccountedRoute: every request counted once (Prometheus, the recorder)
    errors             HTTPProblem and the JSON answer
    schemas            the bodies as pydantic models (the OpenAPI document) and the raw body reader
    predict            /predict
    admin              /load, /unload, /default, /split
    health             /health, /model_info, /shadow, /metrics
    monitoring_routes  /monitoring/*, /dashboard, /feedback
    encoding           the /predict answer as bytes
"""
