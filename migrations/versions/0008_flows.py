"""flows: child sagas know their parent; snapshots say their format

A ChildSaga node starts an instance of another saga: `parent_id` links it to the instance that
started it (the API lists a parent's children by it). Snapshots gain a `format`: 2 holds node
states and a parent link. The stored ones (format 1, without the field: linear sagas, whose
step keys are their step names) are rewritten as format 2 with no nodes and no parent.
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.add_column(
        "instances",
        sa.Column(
            "parent_id",
            postgresql.UUID(as_uuid=True),
            nullable=True,
            comment="the instance whose ChildSaga node started this one",
        ),
        schema="warren",
    )
    op.create_index(
        "ix_instances_parent",
        "instances",
        ["parent_id"],
        schema="warren",
        postgresql_where=sa.text("parent_id IS NOT NULL"),
    )
    op.execute(
        """
        UPDATE warren.instances SET state = state || '{"format": 2}'::jsonb
        WHERE NOT state ? 'format'
        """
    )


def downgrade() -> None:
    # Snapshots keep their format: an older Warren ignores fields it does not know.
    op.drop_index("ix_instances_parent", table_name="instances", schema="warren")
    op.drop_column("instances", "parent_id", schema="warren")
