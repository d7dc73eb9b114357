"""A churn service with the retention desk, for tests/test_desk.py: `uvicorn --factory desk_app:create_desk_app`.

Until `create_app` wires the desk itself, this adds it the way the integrator will: `add_desk_routes(app, FastRoute)`,
and the page's exact paths (`PAGE_PATHS`) open without an API key while every other path, the page's calls
included, goes through the service's own `ApiKeyMiddleware`. Once `create_app` serves `/whatif`, the app is
returned as it is, so the tests check the real wiring.
"""
from churn_deploy.config import Settings, api_key_table
from churn_deploy.desk import PAGE_PATHS, add_desk_routes
from churn_deploy.middleware import ApiKeyMiddleware
from churn_deploy.serve import FastRoute, create_app


def desk_wired(app) -> bool:
    "Whether `create_app` already adds the desk's routes."
    return any(getattr(r, "path", None) == "/whatif" for r in app.routes)


def create_desk_app():
    s = Settings()
    app = create_app(s)
    if desk_wired(app): return app
    keys = api_key_table(s)
    app = add_desk_routes(create_app(s.model_copy(update={"api_key": None, "api_keys": None})), FastRoute)
    if not keys: return app
    guarded = ApiKeyMiddleware(app, keys)

    async def asgi(scope, receive, send):
        if scope["type"] == "http" and scope["path"] in PAGE_PATHS: return await app(scope, receive, send)
        await guarded(scope, receive, send)
    return asgi
