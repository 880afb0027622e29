"""label cache (the labeler's LLM labels, reused within their TTL)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 06:00:00.000000
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('label_cache',
    sa.Column('cache_key', sa.Text(), nullable=False),
    sa.Column('labels', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('cache_key')
    )
    op.create_index('ix_label_cache_expires', 'label_cache', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_label_cache_expires', table_name='label_cache')
    op.drop_table('label_cache')
