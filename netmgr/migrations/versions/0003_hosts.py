"""Compute hosts registered by compute agents, and VM records (issue 3).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

Reserved in the chain so that work on several issues lands as one line of
revisions; the tables come with their issue.
"""

from __future__ import annotations

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
