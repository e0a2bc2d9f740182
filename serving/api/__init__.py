"""The HTTP layer: the FastAPI app (``serving.api.app:app``) built from routers.

    app          the app factory and its lifespan: what a server process holds (``app.state``)
    encoding     the /predict answer as bytes
    openapi      what the OpenAPI document says about the bodies the server reads itself
"""
