"""run annotations: a run's name and its label overrides (PATCH .../labels and .../name)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 14:00:00.000000
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('run_annotations',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('namespace', sa.String(length=128), nullable=False),
    sa.Column('cluster_id', sa.String(length=64), nullable=False),
    sa.Column('run_name', sa.String(length=120), nullable=True),
    sa.Column('label_overrides', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('run_id')
    )


def downgrade() -> None:
    op.drop_table('run_annotations')
