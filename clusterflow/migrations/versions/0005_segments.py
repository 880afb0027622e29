"""vector segments in S3: the segments table, and each vector row's place in one

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 10:00:00.000000

Existing vector rows become the unsealed tail (segment_id NULL): the first run over
them seals them, so a collection from before this migration needs no manual step.
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('segments',
    sa.Column('segment_id', sa.BigInteger(), sa.Identity(), nullable=False),
    sa.Column('namespace', sa.String(length=128), nullable=False),
    sa.Column('collection_id', sa.String(length=64), nullable=False),
    sa.Column('embedding_name', sa.String(length=128), nullable=False),
    sa.Column('dimension', sa.Integer(), nullable=False),
    sa.Column('object_key', sa.Text(), nullable=False),
    sa.Column('num_rows', sa.Integer(), nullable=False),
    sa.Column('num_bytes', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), server_default='active', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('segment_id'),
    sa.UniqueConstraint('object_key', name='uq_segments_object_key'),
    )
    op.create_index('ix_segments_collection', 'segments', ['collection_id', 'embedding_name', 'state'])
    op.create_table('run_segments',
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('segment_id', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'segment_id'),
    )
    op.create_index('ix_run_segments_segment', 'run_segments', ['segment_id'])
    op.execute("CREATE SEQUENCE document_vector_version")
    op.add_column('document_vectors', sa.Column(
        'version', sa.BigInteger(), server_default=sa.text("nextval('document_vector_version')"), nullable=False))
    op.add_column('document_vectors', sa.Column('segment_id', sa.BigInteger(), nullable=True))
    op.add_column('document_vectors', sa.Column('segment_row', sa.Integer(), nullable=True))
    op.create_index('ix_document_vectors_segment', 'document_vectors', ['segment_id', 'segment_row'])
    op.create_index('ix_document_vectors_tail', 'document_vectors', ['collection_id', 'embedding_name'],
                    postgresql_where=sa.text('segment_id IS NULL'))


def downgrade() -> None:
    op.drop_index('ix_document_vectors_tail', table_name='document_vectors')
    op.drop_index('ix_document_vectors_segment', table_name='document_vectors')
    op.drop_column('document_vectors', 'segment_row')
    op.drop_column('document_vectors', 'segment_id')
    op.drop_column('document_vectors', 'version')
    op.execute("DROP SEQUENCE document_vector_version")
    op.drop_index('ix_run_segments_segment', table_name='run_segments')
    op.drop_table('run_segments')
    op.drop_index('ix_segments_collection', table_name='segments')
    op.drop_table('segments')
