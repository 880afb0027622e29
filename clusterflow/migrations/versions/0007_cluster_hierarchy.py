"""clusters: the hosted config's hierarchical and max_hierarchy_depth

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 13:30:00.000000
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('clusters', sa.Column('hierarchical', sa.Boolean(), server_default='false', nullable=False))
    op.add_column('clusters', sa.Column('max_hierarchy_depth', sa.Integer(), server_default='3', nullable=False))


def downgrade() -> None:
    op.drop_column('clusters', 'max_hierarchy_depth')
    op.drop_column('clusters', 'hierarchical')
