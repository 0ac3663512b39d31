from __future__ import annotations

import re
from typing import Any

from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@host — greedy up to the last "@" before the path, since passwords
# with an unescaped "@" are common in hand-written URLs.
URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s]*@")


class AlwaysSafeExceptionReporterFilter(SafeExceptionReporterFilter):
    """Hide sensitive variables and POST fields on the debug page too.

    Django's filter steps aside when DEBUG is on; API keys must stay hidden even then, since
    a debug page is easily shown to a teammate or pasted into a bug report.
    """

    def is_active(self, request) -> bool:
        return True

    def cleanse_setting(self, key, value) -> Any:
        """Also hide the credentials inside URL-valued settings (REDIS_URL, CHANNEL_LAYERS'
        hosts, DATABASE_URL): their names do not look secret, so Django shows them whole."""
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            cleansed = URL_USERINFO.sub(rf"\g<scheme>{self.cleansed_substitute}@", cleansed)
        return cleansed
