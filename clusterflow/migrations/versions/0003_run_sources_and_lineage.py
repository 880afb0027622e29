"""run sources (assign, composite) and cluster lineage on executions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 07:00:00.000000
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('executions', sa.Column('source_run_id', sa.String(length=64), nullable=True))
    op.add_column('executions', sa.Column('source_execution_ids', postgresql.JSONB(astext_type=sa.Text()),
                                          nullable=True))
    op.add_column('executions', sa.Column('source_clusters', postgresql.JSONB(astext_type=sa.Text()),
                                          nullable=True))
    op.add_column('executions', sa.Column('lineage', postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column('executions', 'lineage')
    op.drop_column('executions', 'source_clusters')
    op.drop_column('executions', 'source_execution_ids')
    op.drop_column('executions', 'source_run_id')
