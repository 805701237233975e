"""Federation's I/O: fetching federated trust domains' bundles over HTTPS.

The records, the checks of a bundle and what is trusted live in the core
(:mod:`tasklease.core.federation`); this adapter fetches (SPIFFE Federation ``https_web``)
and hands what it got to the core. See docs/federation.md.
"""

from tasklease.federation.refresher import FetchError, fetch_bundle, refresh_domain, refresh_due

__all__ = ["FetchError", "fetch_bundle", "refresh_domain", "refresh_due"]
