"""Tenant SSH key pairs: the public key a port's guest is given by its router.

A key pair a port names cannot be deleted (FailedPrecondition); replacing a
port's key pair is a port update (it bumps the router's generation).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.grpc_errors import AlreadyExists, FailedPrecondition
from netmgr.model.metadata import KeyPair, KeyPairSpec, check_key_pair_spec
from netmgr.model.paging import Page, PageRequest
from netmgr.store import rows, shared
from netmgr.store.base import Database, new_id
from netmgr.store.tables.base import utcnow
from netmgr.store.tables.core import PortRow
from netmgr.store.tables.keypairs import KeyPairRow


def key_pair(row: KeyPairRow) -> KeyPair:
    return KeyPair(id=row.id, tenant_id=row.tenant_id, name=row.name,
                   public_key=row.public_key, fingerprint=row.fingerprint,
                   key_type=row.key_type, created_at=row.created_at)


def key_pair_row(s: Session, tenant_id: str, key_pair_id: str,
                 field: str = "id") -> KeyPairRow:
    return shared.owned(s, KeyPairRow, tenant_id, key_pair_id, "key pair", field)


class KeyPairStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def import_key_pair(self, tenant_id: str, spec: KeyPairSpec) -> KeyPair:
        parsed = check_key_pair_spec(spec)

        def tx(s: Session) -> KeyPair:
            shared.tenant_row(s, tenant_id)
            taken = s.scalar(select(KeyPairRow.id).where(
                KeyPairRow.tenant_id == tenant_id, KeyPairRow.name == spec.name))
            if taken is not None:
                raise AlreadyExists("key_pair.name",
                                    f"a key pair named {spec.name!r} already exists")
            row = KeyPairRow(id=new_id(), tenant_id=tenant_id, name=spec.name,
                             public_key=parsed.line, fingerprint=parsed.fingerprint,
                             key_type=parsed.key_type, created_at=utcnow())
            s.add(row)
            s.flush()
            return key_pair(row)

        return self._db.write(tx)

    def get_key_pair(self, tenant_id: str, key_pair_id: str) -> KeyPair:
        return self._db.read(lambda s: key_pair(key_pair_row(s, tenant_id, key_pair_id)))

    def list_key_pairs(self, tenant_id: str, page: PageRequest) -> Page[KeyPair]:
        return self._db.read(lambda s: rows.paged_rows(
            s, select(KeyPairRow).where(KeyPairRow.tenant_id == tenant_id), KeyPairRow, page,
            key_pair))

    def delete_key_pair(self, tenant_id: str, key_pair_id: str) -> None:
        def tx(s: Session) -> None:
            row = key_pair_row(s, tenant_id, key_pair_id)
            users = s.scalar(select(func.count()).select_from(PortRow).where(
                PortRow.ssh_key_pair_id == row.id)) or 0
            if users:
                raise FailedPrecondition(
                    f"key pair {row.name!r} is used by {users} port(s); change them first")
            s.delete(row)

        self._db.write(tx)
