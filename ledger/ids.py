"""Time-ordered record ids (UUIDv7), minted where a record is born."""

import uuid_utils


def new_id() -> str:
    """A new UUIDv7 as its canonical string: sorts by creation time."""
    return str(uuid_utils.uuid7())
