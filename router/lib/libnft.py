"""The in-process nftables binding, shared with the host fabric's port filters:
it lives in ``common.libnft``; the router's modules import it from here."""

from common.libnft import NftError, run, run_checked, run_here

__all__ = ["NftError", "run", "run_checked", "run_here"]
