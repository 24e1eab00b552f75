"""The FastAPI app: the OpenAI-compatible routes, the persona list and custom-trait jobs, and the web page.
Errors are JSON with a message, never a traceback."""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .engine import Engine, QueueFull
from .guard import add_guard
from .http import ApiError, error_response
from .jobs import ExtractionRefused, Extractions, ExtractRequest
from .openai_api import openai_routes
from .personas import UnknownPersona


def create_app(engine: Engine, model_name: str = "personactl") -> FastAPI:
    """The app over a running engine (the caller owns the engine and closes it)."""
    settings, library = engine.settings, engine.library
    extractions = Extractions(engine, settings.max_jobs)
    app = FastAPI(title="personactl", docs_url=None, redoc_url=None, openapi_url=None)
    static = resources.files("personactl") / "server" / "static"
    add_guard(app, settings)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
        return error_response(400, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(_request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error ({type(exc).__name__})")

    app.include_router(openai_routes(engine, model_name))

    @app.get("/personas")
    async def personas() -> dict:
        """The library (broken files listed by name apart) and the limits a client must respect (the page follows them)."""
        limits = {"max_tokens": settings.max_tokens, "max_personas": settings.max_personas, "max_steering": settings.max_steering}
        return {**library.describe(), "limits": limits}

    @app.post("/personas/extract")
    async def extract_trait(body: ExtractRequest) -> dict:
        try:
            return extractions.submit(body).to_dict()
        except QueueFull as exc:
            raise ApiError(429, str(exc), {"Retry-After": "10"}) from exc
        except UnknownPersona as exc:
            raise ApiError(409, str(exc)) from exc
        except ExtractionRefused as exc:
            raise ApiError(400, str(exc)) from exc

    @app.get("/personas/jobs/{job}")
    async def job_state(job: str) -> dict:
        if job not in extractions.jobs:
            raise ApiError(404, f"no extraction job '{job}'")
        return extractions.jobs[job].to_dict()

    @app.delete("/personas/jobs/{job}")
    async def cancel_job(job: str) -> dict:
        if job not in extractions.jobs:
            raise ApiError(404, f"no extraction job '{job}'")
        return extractions.cancel(job).to_dict()

    if (static / "index.html").is_file():
        app.mount("/static", StaticFiles(directory=str(static)), name="static")

        @app.get("/")
        async def page() -> FileResponse:
            return FileResponse(str(static / "index.html"))

    return app
