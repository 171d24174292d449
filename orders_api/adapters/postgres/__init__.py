"""Everything that talks to PostgreSQL: engines, repositories, migrations, the lost-commit lookup."""
