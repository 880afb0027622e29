"""api keys (hashed, scoped to namespaces) and the queue-position indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 08:00:00.000000
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('key_id', sa.String(length=32), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=256), nullable=True),
    sa.Column('namespaces', postgresql.ARRAY(sa.String(length=128)), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key_id')
    )
    op.create_index('ix_tasks_status_created', 'tasks', ['status', 'created_at'], unique=False)
    op.create_index('ix_executions_status_completed', 'executions', ['status', 'completed_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_executions_status_completed', table_name='executions')
    op.drop_index('ix_tasks_status_created', table_name='tasks')
    op.drop_table('api_keys')
