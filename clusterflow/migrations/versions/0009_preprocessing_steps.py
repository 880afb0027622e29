"""clusters.preprocessing_steps: the hosted SDK's steps applied before clustering

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 14:00:00.000000
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('clusters', sa.Column('preprocessing_steps', postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column('clusters', 'preprocessing_steps')
