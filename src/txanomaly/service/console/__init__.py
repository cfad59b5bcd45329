"""The analysts' console: session access (:mod:`.auth`), the pages (:mod:`.pages`), the live
metrics (:mod:`.live`) and the static files it ships (``static/``: one style sheet, one script;
no web font, nothing fetched from elsewhere). The routes are
:mod:`txanomaly.service.routers.console`."""
