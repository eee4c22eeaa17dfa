"""The audit and approval console: a browser UI and a JSON API over the use cases.

`create_app` builds the ASGI application over a `pbxguard.app.console.Console`;
`ConsoleServer` serves it with uvicorn, inside the daemon's task group or standalone
(``pbxguard console``).
"""

from pbxguard.entrypoints.web.app import create_app
from pbxguard.entrypoints.web.server import ConsoleServer

__all__ = ["ConsoleServer", "create_app"]
