"""The run viewer: an HTML page over a run's layout, and the compact endpoint it reads.

Wire it into the gateway with `app.include_router(web.router)`.
"""
from services.gateway.web.routes import router

__all__ = ["router"]
