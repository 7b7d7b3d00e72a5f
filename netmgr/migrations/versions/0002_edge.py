"""Edge services: public IPs, static NAT, port forwarding, firewall, load balancers (issue 5).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Reserved in the chain so that work on several issues lands as one line of
revisions; the tables come with their issue.
"""

from __future__ import annotations

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
