"""The broker's access log never carries the bearer secrets of signed URLs or login links."""

import contextlib
import time
import urllib.error
import urllib.request


def test_signed_store_urls_and_login_links_are_redacted_in_the_access_log(broker_server):
    secret_url = broker_server.url + "/store/v1/SECRETTOKENvalue123"
    link = broker_server.url + "/auth/link/ell_0123456789abcdef_SECRETlinkVALUE"
    callback = broker_server.url + "/auth/callback?code=SECRETcode&state=SECRETstate"
    for url in (secret_url, link, callback):
        with contextlib.suppress(urllib.error.HTTPError):  # refused, as it should be
            urllib.request.urlopen(url, timeout=5).read()
    time.sleep(0.5)  # let the last worker write its access line before the broker stops
    broker_server.stop()
    log = broker_server.log.read_text()
    assert "/store/v1/[redacted]" in log
    assert "/auth/link/[redacted]" in log
    assert "SECRET" not in log
