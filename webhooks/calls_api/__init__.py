"""The calls API (docs/calls-api.md): the web role's part that calls the platforms.

`views` reads requests and writes answers, `steps` carries out the core's decisions against
Redis and the platforms, `access` decides who may. The webhook receiver imports none of it.
"""

from webhooks.calls_api.views import calls_blueprint

__all__ = ["calls_blueprint"]
