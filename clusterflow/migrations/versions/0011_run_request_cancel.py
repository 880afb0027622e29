"""run_requests.canceled_at: the gateway's record of a cancel request, read by workers

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 16:40:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('run_requests', sa.Column('canceled_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('run_requests', 'canceled_at')
