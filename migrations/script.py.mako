"""${message}"""

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
# Alembic reads these two (the file name orders the files for people).
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
