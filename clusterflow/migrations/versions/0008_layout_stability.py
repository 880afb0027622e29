"""clusters.layout_stability: how each run's map keeps the previous run's shape

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 13:30:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing clusters get the default, as the hosted API does when nothing is set.
    op.add_column('clusters', sa.Column('layout_stability', sa.String(length=16), server_default='align',
                                        nullable=False))


def downgrade() -> None:
    op.drop_column('clusters', 'layout_stability')
