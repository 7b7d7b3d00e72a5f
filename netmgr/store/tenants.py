"""Tenants and their bearer tokens in the store.

A token's secret is returned once, at creation; only its SHA-256 is kept.
A tenant is deleted only once it owns no network and no VPC (its tokens go
with it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import Session

from common.grpc_errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from netmgr.model import core as model
from netmgr.model.paging import Page, PageRequest
from netmgr.model.validation import check_id, check_tenant_name, check_token_name
from netmgr.store import rows, shared
from netmgr.store.base import Database, new_id
from netmgr.store.security_groups import ensure_default_group
from netmgr.store.tables.audit import QuotaLimitRow
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import NetworkRow, TenantRow, TokenRow
from netmgr.store.tables.vpc import VpcRow
from netmgr.store.token_cache import TokenCache

TOKEN_PREFIX = "cn_"
MAX_TOKEN_TTL_SECONDS = 10 * 365 * 24 * 3600


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# Built once (its cache key computed once): every API call runs it.
_TOKEN_BY_DIGEST = select(*TokenRow.__table__.columns).where(
    TokenRow.secret_sha256 == bindparam("digest"))


class TenantStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        # Tokens found, remembered for a short time by this replica (token_cache.py).
        self.token_cache = TokenCache()

    # --------------------------------------------------------------- tenants

    def create_tenant(self, name: str) -> model.Tenant:
        name = check_tenant_name(name)

        def tx(s: Session) -> model.Tenant:
            if s.scalar(select(TenantRow.id).where(TenantRow.name == name)) is not None:
                raise AlreadyExists("name", f"a tenant named {name!r} already exists")
            row = TenantRow(id=new_id(), name=name, created_at=utcnow())
            s.add(row)
            s.flush()
            ensure_default_group(s, row.id)
            return rows.tenant(row)

        return self._db.write(tx)

    def get_tenant(self, tenant_id: str) -> model.Tenant:
        return self._db.read(lambda s: rows.tenant(shared.tenant_row(s, tenant_id, "id")))

    def list_tenants(self, page: PageRequest) -> Page[model.Tenant]:
        return self._db.read(lambda s: rows.paged_rows(
            s, select(TenantRow), TenantRow, page, rows.tenant))

    def delete_tenant(self, tenant_id: str) -> None:
        def tx(s: Session) -> None:
            row = shared.tenant_row(s, tenant_id, "id")
            count = s.scalar(select(func.count()).where(NetworkRow.tenant_id == row.id))
            if count:
                raise FailedPrecondition(
                    f"tenant {row.name!r} still owns {count} network(s); delete them first")
            count = s.scalar(select(func.count()).where(VpcRow.tenant_id == row.id))
            if count:
                raise FailedPrecondition(
                    f"tenant {row.name!r} still owns {count} VPC(s); delete them first")
            s.execute(delete(QuotaLimitRow).where(QuotaLimitRow.scope == row.id))
            s.execute(delete(TenantRow).where(TenantRow.id == row.id))  # tokens cascade

        self._db.write(tx)
        self.token_cache.forget(tenant_id=check_id(tenant_id, "id"))

    # ---------------------------------------------------------------- tokens

    def create_token(self, tenant_id: str, name: str, *, ttl_seconds: int = 0,
                     read_only: bool = False) -> tuple[model.Token, str]:
        """A new bearer token; the secret is returned once and only its hash
        kept. ``ttl_seconds``: 0 never expires."""
        name = check_token_name(name)
        if not 0 <= ttl_seconds <= MAX_TOKEN_TTL_SECONDS:
            raise InvalidArgument.one("ttl_seconds", f"must be 0 (never expires) to "
                                                     f"{MAX_TOKEN_TTL_SECONDS} (got {ttl_seconds})")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)

        def tx(s: Session) -> model.Token:
            tenant = shared.tenant_row(s, tenant_id)
            now = utcnow()
            row = TokenRow(id=new_id(), tenant_id=tenant.id, name=name,
                           secret_sha256=secret_digest(secret), created_at=now,
                           expires_at=now + dt.timedelta(seconds=ttl_seconds) if ttl_seconds
                           else None, read_only=read_only)
            s.add(row)
            s.flush()
            return rows.token(row)

        return self._db.write(tx), secret

    def list_tokens(self, tenant_id: str, page: PageRequest) -> Page[model.Token]:
        """The tokens of one tenant, or of all tenants when ``tenant_id`` is empty."""
        def tx(s: Session) -> Page[model.Token]:
            stmt = select(TokenRow)
            if tenant_id:
                stmt = stmt.where(TokenRow.tenant_id == shared.tenant_row(s, tenant_id).id)
            return rows.paged_rows(s, stmt, TokenRow, page, rows.token)

        return self._db.read(tx)

    def delete_token(self, token_id: str) -> None:
        def tx(s: Session) -> None:
            row = s.get(TokenRow, check_id(token_id))
            if row is None:
                raise NotFound(f"token {token_id} not found")
            s.delete(row)

        self._db.write(tx)
        self.token_cache.forget(token_id=check_id(token_id))

    def token_for_secret(self, secret: str) -> model.Token | None:
        """The token whose secret this is, or None."""
        if not secret.startswith(TOKEN_PREFIX):
            return None
        digest = secret_digest(secret)
        cached = self.token_cache.get(digest)
        if cached is not None:
            return cached
        looked_up_at = self.token_cache.clock()

        def tx(s: Session) -> model.Token | None:
            # Core columns, not an ORM entity: every API call runs this.
            row = s.connection().execute(_TOKEN_BY_DIGEST, {"digest": digest}).first()
            # The index lookup already matched; compare anyway in constant time
            # so no timing depends on the stored value.
            if row is None or not hmac.compare_digest(row.secret_sha256, digest):
                return None
            return rows.token(row)  # type: ignore[arg-type]  # the same columns

        token = self._db.read_statement(tx)  # one statement, when not remembered
        if token is not None:
            self.token_cache.put(digest, token, looked_up_at)
        return token
