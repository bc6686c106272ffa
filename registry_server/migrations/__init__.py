"""Versioned schema migrations, applied in numeric order by playhouse.migrations on server start."""
